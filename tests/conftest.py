"""Shared fixtures: the real legal set from ../shared, and configs whose state lives in a temp folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from steep.config import SteepConfig, load_config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "datasets" / "legal_summarization"

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def legal_jsonl() -> Path:
    path = SHARED_DATA / "legal_summarization.jsonl"
    assert path.exists(), (
        f"the test data set is missing: expected {path} (the shared/ folder beside the repo)"
    )
    return path


def legal_overrides(path: Path, home: Path) -> list[str]:
    """--set overrides that point the default config at the shared JSONL copy of the legal set."""
    return [
        f"data.source={path}",
        "data.sha256=null",
        "data.id_column=id",
        "data.text_column=source_text",
        "data.summary_column=summary",
        "data.group_column=doc",
        f"project.home={home}",
    ]


@pytest.fixture
def legal_config(legal_jsonl: Path, tmp_path: Path) -> SteepConfig:
    return load_config(REPO / "steep.yaml", legal_overrides(legal_jsonl, tmp_path / "home"), environ={})


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory) -> Path:
    """A tiny random-init causal LM (and tokenizer) folder, built once per test module."""
    from tests.conftest_train import tiny_causal

    return tiny_causal(tmp_path_factory.mktemp("causal"))


@pytest.fixture(scope="module")
def seq2seq_dir(tmp_path_factory) -> Path:
    """A tiny random-init T5-style seq2seq folder, built once per test module."""
    from tests.conftest_train import tiny_seq2seq

    return tiny_seq2seq(tmp_path_factory.mktemp("seq2seq"))
