"""`steep tune` for real: the command on a real local Ray with Ray Tune, a tiny model and a toy data set
whose test rows carry a sentinel. Two trials: the defaults (they finish) and one whose batch cannot fit the
train split (it fails, the search goes on). About 40 s on 2 cores."""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from typer.testing import CliRunner

import steep.cli  # noqa: F401  (registers every command on the app)
from steep.cli.app import app, console
from steep.config import load_config
from steep.pipeline.prepare import prepare_splits
from steep.pipeline.tune import GENERATED_TAG, KIND_TAG, OUTCOME_TAG, OVERLAY_MARK, SCORED_TAG
from steep.ray_jobs.tune_trial import texts_digest
from tests.conftest_train import INSTRUCTION, tiny_causal, toy_frame

pytestmark = pytest.mark.integration

SENTINEL = "SENTINELTESTROW"


@pytest.fixture
def project(tmp_path, monkeypatch, embedded_mlflow) -> Path:
    """A project folder: steep.yaml on a toy JSONL whose test rows (as steep splits them) carry SENTINEL."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(console, "width", 250)
    data = tmp_path / "toy.jsonl"
    frame = toy_frame(64)
    frame.to_json(data, orient="records", lines=True)
    config = {
        "project": {"name": "tune-test", "home": str(tmp_path / "home")},
        "data": {"source": str(data), "sha256": None, "id_column": "id", "text_column": "text",
                 "summary_column": "summary", "group_column": "group",
                 "split": {"train": 0.6, "validation": 0.2, "test": 0.2}},
        "validation": {"summary_min_words": 1, "min_rows": 10},
        "model": {"source": str(tiny_causal(tmp_path / "model")), "max_source_tokens": 24,
                  "max_target_tokens": 6, "instruction": INSTRUCTION},
        "training": {"batch_size": 8, "learning_rate": 3e-3, "epochs": 2, "warmup_ratio": 0.0},
        "serving": {"max_new_tokens": 6},
        "tune": {"trials": 2, "time_budget": "5m", "cpus_per_trial": 1, "space": {
            "training.learning_rate": {"loguniform": [1e-3, 1e-2]},
            "training.batch_size": {"choice": [4096]},  # the defaults' 8 run first; 4096 cannot fit: it fails
        }},
    }  # fmt: skip
    path = tmp_path / "steep.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    test_ids = set(prepare_splits(load_config(path, environ={})).splits.test["id"])
    frame.loc[frame["id"].isin(test_ids), "text"] += f" {SENTINEL}"  # the same groups split the same way
    frame.to_json(data, orient="records", lines=True)
    return path


def test_a_two_trial_search_writes_an_overlay_and_never_touches_the_test_split(project):
    cfg = load_config(project, environ={})
    splits = prepare_splits(cfg).splits
    assert splits.test["text"].str.contains(SENTINEL).all()
    assert not splits.validation["text"].str.contains(SENTINEL).any()
    before = project.read_bytes()

    started = time.perf_counter()
    result = CliRunner().invoke(app, ["tune", "-c", str(project)])
    wall = time.perf_counter() - started
    print(f"\nsteep tune, 2 tiny trials: {wall:.1f} s wall\n{result.output}")
    assert result.exit_code == 0, result.output + repr(result.exception)

    # steep's own lines, one per trial; no Ray Tune tables or tracebacks
    out = result.output
    assert "trial 1/2 finished in" in out and "(the defaults) | val loss" in out
    assert "trial 2/2 failed after" in out and "TrainingError: the train split has" in out
    assert "best trial 1/2: validation ROUGE-L" in out
    for noise in ("Traceback", "Trial status", "Configuration for experiment", "View detailed results"):
        assert noise not in out

    # the overlay: the tuned keys only, the best trial's values; it merges over steep.yaml, which is unchanged
    overlay = project.parent / "tuned.yaml"
    text = overlay.read_text()
    assert text.startswith(OVERLAY_MARK) and "steep run -c steep.yaml -c tuned.yaml" in text
    assert yaml.safe_load(text) == {"training": {"learning_rate": 0.003, "batch_size": 8}}
    merged = load_config([project, overlay], environ={})
    assert (merged.training.learning_rate, merged.training.batch_size) == (0.003, 8)
    assert project.read_bytes() == before

    # MLflow: one parent, each trial a child run under it
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("tune-test").experiment_id
    (parent,) = client.search_runs([experiment], f"tags.`{KIND_TAG}` = 'tune'")
    assert parent.info.status == "FINISHED"
    assert parent.data.params["best.training.learning_rate"] == "0.003"
    assert parent.data.metrics["trials_finished"] == 1 and parent.data.metrics["trials_failed"] == 1
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "tune")}
    assert {"tune/tuned.yaml", "tune/tune_trials.png", "tune/trials.json"} <= artifacts
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_trial = {run.data.tags["steep.tune.trial"]: run for run in children}
    assert sorted(by_trial) == ["1", "2"]
    done, failed = by_trial["1"], by_trial["2"]
    assert done.info.status == "FINISHED" and done.data.tags[OUTCOME_TAG] == "finished"
    assert "val_rougeL" in done.data.metrics and done.data.params["training.workers"] == "0"
    assert len(client.get_metric_history(done.info.run_id, "val_loss")) == 2  # one per epoch
    assert failed.info.status == "FAILED" and "training.batch_size=4096" in failed.data.tags[OUTCOME_TAG]

    # the test split was never read: trials generated on and scored exactly the validation rows
    assert done.data.tags[GENERATED_TAG] == texts_digest(list(splits.validation["text"]))
    assert done.data.tags[SCORED_TAG] == splits.digests["validation"] != splits.digests["test"]
    assert done.data.params["data.digest.validation"] == splits.digests["validation"]
    assert not any(k == "data.digest.test" for run in (parent, *children) for k in run.data.params)
    folder = client.download_artifacts(done.info.run_id, "tune")
    table = json.loads((Path(folder) / "validation_predictions.json").read_text())
    scored_ids = {row[table["columns"].index("id")] for row in table["data"]}
    assert scored_ids == set(splits.validation["id"])
    assert SENTINEL not in (Path(folder) / "validation_predictions.json").read_text()
    assert not (cfg.home / "runs" / "latest").exists()  # `steep train --resume` is not pointed at a trial
