"""A registry with tiny champions and a real `bentoml serve` process over it, for the serving tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from steep import tracking
from steep.config import SteepConfig
from steep.models import PromptFormat
from steep.registry import Registry, model_name
from steep.serving import process
from steep.stack.daemons import free_port
from tests.conftest_train import INSTRUCTION, tiny_causal


def tiny_serving_config(home: Path, model_dir: Path, **serving) -> SteepConfig:
    """Tiny model limits: short prompts, 4 new tokens, hot-swap polling every second."""
    return SteepConfig.model_validate(
        {
            "project": {"home": str(home)},
            "model": {
                "source": str(model_dir),
                "max_source_tokens": 24,
                "max_target_tokens": 6,
                "instruction": INSTRUCTION,
            },
            "serving": {
                "max_new_tokens": 4,
                "max_batch_size": 8,
                "max_latency_ms": 20_000,
                "max_texts": 4,
                "max_text_chars": 200,
                "poll_interval": "1s",
                **serving,
            },
        }
    )


def register_tiny(cfg: SteepConfig, folder: Path, promote: bool = True) -> str:
    """Log a random-init tiny causal LM as steep's pyfunc, register it, optionally make it champion."""
    if not (folder / "config.json").exists():
        tiny_causal(folder)
        PromptFormat.from_config(cfg.model, "causal").save(folder)
    experiment = tracking.setup(cfg)
    with mlflow.start_run(experiment_id=experiment) as run:
        uri = tracking.log_summarizer({"model": str(folder)}, cfg.serving.max_new_tokens)
    registry = Registry(model_name(cfg))
    version = registry.register(uri, run.info.run_id, {"steep.test": True})
    if promote:
        registry.promote(version.version, "test")
    return str(version.version)


@dataclass
class Server:
    url: str
    cfg: SteepConfig
    model_dir: Path
    log: Path


@pytest.fixture(scope="module")
def tiny_registry(tmp_path_factory) -> tuple[SteepConfig, Path]:
    root = tmp_path_factory.mktemp("serving")
    cfg = tiny_serving_config(root / "home", root / "tiny")
    register_tiny(cfg, root / "tiny")
    return cfg, root / "tiny"


def run_server(
    cfg: SteepConfig, model_dir: Path, log: Path, extra_env: dict | None = None
) -> Iterator[Server]:
    port = free_port()
    proc = process.start(cfg, "127.0.0.1", port, log_file=log, extra_env=extra_env)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            process.wait_ready(url, proc, timeout_s=150)
        except Exception:
            print(log.read_text()[-4000:] if log.exists() else "(no server log)")
            raise
        yield Server(url, cfg, model_dir, log)
    finally:
        process.stop(proc)
