"""An export travels with its version: logged with the run at registration, fetched by a server's cache."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from steep.engines import published
from steep.tracking import artifact_location


@pytest.fixture
def run_id(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = MlflowClient().create_experiment("exports", artifact_location=artifact_location(uri))
    yield MlflowClient().create_run(experiment).info.run_id
    mlflow.set_tracking_uri(None)


def an_export(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"graph")
    (folder / "genai_config.json").write_text("{}")
    return folder


def test_a_published_export_is_fetched_into_another_cache_once(run_id: str, tmp_path: Path) -> None:
    export = an_export(tmp_path / "evaluation-cache" / "0123abcd")
    assert published.publish(export, run_id) == "onnx/0123abcd"
    server_cache = tmp_path / "server-cache"
    [fetched] = published.fetch(run_id, server_cache)
    assert fetched == server_cache / "0123abcd"
    assert (fetched / "model.onnx").read_bytes() == b"graph"
    (fetched / "model.onnx").write_bytes(b"kept")  # a second fetch downloads nothing over the cache
    assert published.fetch(run_id, server_cache) == [fetched]
    assert (fetched / "model.onnx").read_bytes() == b"kept"


def test_a_run_without_exports_fetches_nothing(run_id: str, tmp_path: Path) -> None:
    assert published.fetch(run_id, tmp_path / "cache") == []
