"""The drift check's plain functions: the champion's reference, the report run and its payload."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest

from steep import tracking
from steep.config import DriftConfig
from steep.drift import DriftError, Reference, Sample, compare
from steep.endpoints import Runtime
from steep.pipeline import drift_check
from steep.pipeline.drift_check import (
    champion_reference,
    configured_splits,
    event_payload,
    log_report,
    report_context,
    report_run,
)
from steep.pipeline.prepare import prepare_splits
from steep.registry import Registry, model_name
from tests.steep.pipeline.conftest import toy_config

SALT = "steep"


def a_report(reference: Sample, window: Sample):
    report = compare(DriftConfig(min_window_rows=5), reference, window, 0.0)
    report.context.update(champion_version="3", reference="train split", nested={"not": "a tag"})
    return report


@pytest.fixture
def samples() -> tuple[Sample, Sample]:
    reference = Sample.from_texts(["the licensee may not sublicense the software"] * 20, SALT)
    window = Sample.from_texts(["patient presents with chest pain radiating"] * 10, SALT)
    return reference, window


def test_event_payload_names_the_report_run(tmp_path, samples):
    cfg = toy_config(tmp_path)
    report = a_report(*samples)
    payload = event_payload(cfg, report, "run-1")
    assert payload["drift_run_id"] == "run-1" and payload["model"] == model_name(cfg)
    assert payload["champion_version"] == "3" and payload["status"] == report.status == "drift"
    assert payload["window_rows"] == 10 and set(payload["metrics"]) == set(payload["limits"])
    json.dumps(payload)  # an event payload and a flow parameter: plain JSON


def test_report_context(tmp_path):
    frame = pd.DataFrame({"model_version": ["2", "1", None, "2"]})
    context = report_context(toy_config(tmp_path), None, frame, flow_run_id=None)
    assert context["served_versions"] == ["1", "2"] and context["champion_version"] is None
    assert context["reference"] is None and context["model"] == "pipe-test-summarizer"
    assert report_context(toy_config(tmp_path), None, pd.DataFrame(), "f")["served_versions"] == []


def test_the_report_run_and_what_it_logs(tmp_path, samples, embedded_mlflow):
    cfg = toy_config(tmp_path)
    reference, window = samples
    report = a_report(reference, window)
    with report_run(Runtime.of(cfg)) as run_id:
        client = mlflow.MlflowClient()
        run = client.get_run(run_id)
        experiment = client.get_experiment(run.info.experiment_id)
        assert experiment.name == "pipe-test-drift" and run.data.tags["steep.kind"] == "drift-check"
        assert experiment.artifact_location == (cfg.home / tracking.ARTIFACTS_DIR).resolve().as_uri()
        with report_run(Runtime.of(cfg)) as again:
            assert client.get_run(again).info.experiment_id == experiment.experiment_id
        log_report(cfg, run_id, report, None, window)  # no reference: no plot
        assert client.get_run(run_id).info.status == "RUNNING"  # the run ends with the block, not the log
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["threshold.oov_share"] == str(DriftConfig().oov_threshold)
    assert run.data.metrics["oov_share"] == pytest.approx(report.metrics["oov_share"])
    assert run.data.metrics["window_rows"] == 10 and "limit.length_psi" in run.data.metrics
    tags = run.data.tags
    assert tags["steep.status"] == "drift" and tags["steep.champion_version"] == "3"
    assert tags["steep.window"] == cfg.drift.window and "steep.nested" not in tags
    assert {a.path for a in client.list_artifacts(run_id, "drift")} == {"drift/report.json"}


def test_a_reference_draws_the_plot(tmp_path, samples, embedded_mlflow):
    cfg = toy_config(tmp_path)
    reference_sample, window = samples
    reference = Reference(reference_sample, "3", "d", None)
    with report_run(Runtime.of(cfg)) as run_id:
        log_report(cfg, run_id, a_report(reference_sample, window), reference, window)
    paths = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "drift")}
    assert paths == {"drift/report.json", "drift/drift.png"}


def test_a_failure_after_the_run_is_created_leaves_it_failed_not_running(
    tmp_path, samples, embedded_mlflow, monkeypatch
):
    """The plot fails half-way through the log: the run ends FAILED, keeps what was logged before, and the
    error goes on up. A Ctrl-C ends it KILLED."""
    cfg = toy_config(tmp_path)
    reference_sample, window = samples
    reference = Reference(reference_sample, "3", "d", None)

    def broken_plot(*args: object) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(drift_check, "drift_plot", broken_plot)
    with pytest.raises(OSError, match="no space left"), report_run(Runtime.of(cfg)) as run_id:
        log_report(cfg, run_id, a_report(reference_sample, window), reference, window)
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.info.end_time is not None
    assert run.data.tags["steep.status"] == "drift"
    assert {a.path for a in client.list_artifacts(run_id, "drift")} == {"drift/report.json"}

    with pytest.raises(KeyboardInterrupt), report_run(Runtime.of(cfg)) as stopped:
        raise KeyboardInterrupt
    assert client.get_run(stopped).info.status == "KILLED"


def test_the_champion_reference_is_its_training_split(tmp_path, embedded_mlflow):
    cfg = toy_config(tmp_path)
    experiment = tracking.setup(cfg)
    assert champion_reference(cfg, SALT).describe().endswith("(no champion; no digest recorded on it)")
    splits = prepare_splits(cfg).splits
    registry = Registry(model_name(cfg))
    run_id = mlflow.MlflowClient().create_run(experiment).info.run_id
    version = registry.register(
        f"runs:/{run_id}/model", run_id, {"steep.split_digest.train": splits.digests["train"]}
    )
    registry.promote(version.version, "test")
    reference = champion_reference(cfg, SALT)
    assert reference.matches and reference.champion_version == str(version.version)
    assert len(reference.sample) == len(splits.train) and reference.sample.groups == list(
        splits.train["group"]
    )
    registry.tag(version.version, **{"steep.split_digest.train": "0" * 64})
    assert not champion_reference(cfg, SALT).matches


def test_a_reference_of_data_that_fails_validation_now(tmp_path):
    with pytest.raises(DriftError, match="cannot be rebuilt as the drift reference"):
        configured_splits(toy_config(tmp_path, validation={"min_rows": 10_000}))
