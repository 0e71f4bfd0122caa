"""steep.tracking: where runs go by default, flat params, metrics batched off the training path."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from steep import logged_model, tracking
from steep.config import SteepConfig


def _cfg(home: Path) -> SteepConfig:
    return SteepConfig.model_validate({"project": {"home": str(home), "name": "track-test"}})


def test_embedded_sqlite_under_home_with_artifacts_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = SteepConfig.model_validate({"project": {"home": ".steep"}})
    assert tracking.default_tracking_uri(cfg) == f"sqlite:///{tmp_path / '.steep' / 'mlflow.db'}"
    first = tracking.setup(cfg)
    assert tracking.setup(cfg) == first  # idempotent: the experiment is reused
    experiment = mlflow.MlflowClient().get_experiment(first)
    assert experiment.name == "steep"
    assert experiment.artifact_location == (tmp_path / ".steep" / "mlartifacts").as_uri()
    assert (tmp_path / ".steep" / "mlflow.db").is_file()


def test_a_given_uri_wins_and_its_artifacts_stay_beside_it(tmp_path, monkeypatch):
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path / "home")
    uri = f"sqlite:///{tmp_path / 'store' / 'elsewhere.db'}"
    (tmp_path / "store").mkdir()
    experiment = mlflow.MlflowClient(uri).get_experiment(tracking.setup(_cfg(tmp_path / "home"), uri))
    assert mlflow.get_tracking_uri() == uri
    assert (tmp_path / "store" / "elsewhere.db").is_file() and not (tmp_path / "home" / "mlflow.db").exists()
    # not ./mlruns in whatever folder the command ran in
    assert experiment.artifact_location == (tmp_path / "store" / "mlartifacts").as_uri()
    assert tracking.artifact_location("http://tracking:5000") is None  # a server decides for itself


def test_flat_params_are_dotted_strings():
    params = tracking.flat_params(
        SteepConfig(data={"split": {"train": 0.8, "validation": 0.05, "test": 0.15}})
    )
    assert params["training.lora.r"] == "16"
    assert params["training.lora.target_modules"] == "all-linear"
    assert params["data.split.train"] == "0.8" and params["data.split.validation"] == "0.05"
    assert all(isinstance(v, str) and len(v) <= 6000 for v in params.values())


def test_metric_logger_batches_and_flushes_on_close(tmp_path):
    experiment = tracking.setup(_cfg(tmp_path))
    client = mlflow.MlflowClient()
    run_id = client.create_run(experiment).info.run_id
    logger = tracking.MetricLogger(run_id, flush_seconds=60)  # nothing flushes before close()
    for step in range(1, 1201):
        logger.log({"loss": 1.0 / step, "lr": 0.1}, step=step)
    assert client.get_metric_history(run_id, "loss") == []
    logger.close()
    history = client.get_metric_history(run_id, "loss")
    assert len(history) == 1200 and sorted(m.step for m in history)[-1] == 1200


def test_texts_of_accepts_frames_lists_and_strings():
    assert logged_model.texts_of(pd.DataFrame({"id": [1], "text": ["a"]})) == ["a"]
    assert logged_model.texts_of(pd.DataFrame({0: ["b", "c"]})) == ["b", "c"]
    assert logged_model.texts_of(["d"]) == ["d"]
    assert logged_model.texts_of("e") == ["e"]
    assert logged_model.texts_of(pd.Series(["f"])) == ["f"]


class _Client:
    def __init__(self):
        self.ended: list[tuple[str, str]] = []

    def set_terminated(self, run_id, status):
        self.ended.append((run_id, status))


@pytest.mark.parametrize(
    ("raised", "status"),
    [(None, "FINISHED"), (ValueError("bad"), "FAILED"), (KeyboardInterrupt(), "KILLED")],
)
def test_a_run_ends_with_the_status_of_its_block(raised, status):
    client = _Client()
    try:
        with tracking.finishing(client, "r1"):
            if raised is not None:
                raise raised
    except (ValueError, KeyboardInterrupt) as exc:
        assert exc is raised  # the error goes on up
    assert client.ended == [("r1", status)]
