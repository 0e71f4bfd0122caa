"""Configs for the pipeline functions: a toy data file (GX runs in seconds on it), state in a temp folder."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from steep.config import SteepConfig
from tests.conftest_train import toy_frame


def toy_config(tmp_path: Path, rows: int = 60, **sections) -> SteepConfig:
    data = tmp_path / "toy.jsonl"
    if not data.exists():
        toy_frame(rows).to_json(data, orient="records", lines=True)
    base = {
        "project": {"home": str(tmp_path / "home"), "name": "pipe-test"},
        "data": {"source": str(data), "sha256": None, "id_column": "id", "text_column": "text",
                 "summary_column": "summary", "group_column": "group"},
        "validation": {"summary_min_words": 1, "min_rows": 10},
        "model": {"kind": "causal"},
    }  # fmt: skip
    for section, values in sections.items():
        base[section] = {**base.get(section, {}), **values}
    return SteepConfig.model_validate(base)


@pytest.fixture
def embedded_mlflow(monkeypatch):
    """The embedded store of the test's config: no URI from an earlier test (mlflow.set_tracking_uri
    exports MLFLOW_TRACKING_URI, which Runtime reads); MLflow pointing nowhere afterwards."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    mlflow.set_tracking_uri(None)
