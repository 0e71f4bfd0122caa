"""Configs whose stack lives in a temp folder on free ports, so parallel test runs never collide."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from steep.config import SteepConfig, load_config
from steep.stack.daemons import free_ports

PORT_KEYS = ("stack.local.mlflow_port", "stack.local.prefect_port", "stack.local.ray_port",
             "stack.local.ray_dashboard_port", "serving.port")  # fmt: skip


def stack_sets(home: Path, **extra: str) -> list[str]:
    """--set overrides: home under tmp and a free port for every service."""
    ports = free_ports(len(PORT_KEYS))
    sets = [f"project.home={home}"] + [f"{key}={port}" for key, port in zip(PORT_KEYS, ports, strict=True)]
    return sets + [f"{k.replace('__', '.')}={v}" for k, v in extra.items()]


@pytest.fixture
def stack_home(tmp_path: Path) -> Path:
    return tmp_path / ".steep"


@pytest.fixture
def cfg_sets(stack_home: Path) -> list[str]:
    return stack_sets(stack_home)


@pytest.fixture
def cfg(cfg_sets: list[str]) -> SteepConfig:
    return load_config(None, cfg_sets, environ={})


@pytest.fixture(autouse=True)
def _prefect_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect writes under PREFECT_HOME; keep it in the test's folder."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-client"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
