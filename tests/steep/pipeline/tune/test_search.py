"""`tune` around its search (steep.pipeline.tune.search): the search is injected (`search=`), so these tests
run what happens before and after it (the checks, the parent run and how it ends, the overlay) without Ray.
The real search on Ray Tune is test_search_on_ray.py."""

from __future__ import annotations

import dataclasses

import mlflow
import pytest
import yaml

from steep.data import split_dataset
from steep.pipeline import ray_session, training
from steep.pipeline.tune import KIND_TAG, OVERLAY_MARK, TuneError, tune
from tests.conftest_train import toy_frame
from tests.steep.pipeline.conftest import toy_config
from tests.steep.pipeline.tune.conftest import outcome


class NoRay:
    """ray_session.RaySession without Ray: a cluster of one node with 2 CPUs."""

    def __init__(self, address):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def connect(self):
        return [2]


def parent_run(cfg):
    client = mlflow.MlflowClient()
    (parent,) = client.search_runs([client.get_experiment_by_name(cfg.project.name).experiment_id])
    return parent


def test_when_no_trial_finishes_there_is_an_error_no_overlay_and_a_failed_parent_run(
    tmp_path, monkeypatch, embedded_mlflow
):
    cfg = toy_config(tmp_path, tune={"trials": 2, "space": {"training.batch_size": {"choice": [4096]}}})
    splits = split_dataset(toy_frame(60), cfg.data.split, cfg.project.seed)
    failed = [outcome(1, "failed", reason="TrainingError: too big"), outcome(2, "failed", reason="x")]
    monkeypatch.setattr(ray_session, "RaySession", NoRay)
    output = tmp_path / "tuned.yaml"
    with pytest.raises(TuneError, match="none of the 2 trials finished") as err:
        tune(
            cfg, splits, output=output, config_files=[tmp_path / "steep.yaml"], search=lambda *a, **k: failed
        )
    assert "TrainingError: too big" in str(err.value)
    assert not output.exists()
    parent = parent_run(cfg)
    assert parent.data.tags[KIND_TAG] == "tune" and parent.info.status == "FAILED"
    assert parent.data.params["tune.trials"] == "2"
    assert "data.digest.test" not in parent.data.params and "data.digest.validation" in parent.data.params


def test_the_best_of_the_searched_trials_becomes_the_overlay_and_the_parent_run_finishes(
    tmp_path, monkeypatch, embedded_mlflow
):
    cfg = toy_config(
        tmp_path, tune={"trials": 3, "space": {"training.learning_rate": {"choice": [1e-3, 2e-3]}}}
    )
    splits = split_dataset(toy_frame(60), cfg.data.split, cfg.project.seed)
    marker = training.runs_root(cfg) / training.LATEST_FILE
    marker.parent.mkdir(parents=True)
    marker.write_text("my-own-run")
    seen = {}

    def search(cfg, plan, context, *, multi_node, log):
        seen.update(keys=plan.keys, threads=context.threads, multi_node=multi_node)
        assert set(context.digests) == {"train", "validation"}  # the test split is never shipped
        log("trial 1/3 ...")
        return [
            outcome(1, score=0.20, loss=2.0, is_defaults=True, settings={"training.learning_rate": 1e-3}),
            outcome(2, score=0.25, loss=1.9, settings={"training.learning_rate": 2e-3}),
            outcome(3, "stopped", loss=3.0, reason="stopped by the time budget"),
        ]

    monkeypatch.setattr(ray_session, "RaySession", NoRay)
    lines: list[str] = []
    output = tmp_path / "tuned.yaml"
    result = tune(cfg, splits, output=output, config_files=[tmp_path / "steep.yaml"], log=lines.append,
                  search=search)  # fmt: skip
    assert seen == {"keys": ["training.learning_rate"], "threads": 2, "multi_node": False}
    assert lines == ["trial 1/3 ..."]
    assert result.best.index == 2 and result.defaults.index == 1
    assert result.settings == {"training.learning_rate": 2e-3}
    assert result.set_lines == ["--set training.learning_rate=0.002"]
    text = output.read_text()
    assert text.startswith(OVERLAY_MARK) and yaml.safe_load(text) == {"training": {"learning_rate": 2e-3}}
    parent = parent_run(cfg)
    assert parent.info.status == "FINISHED" and parent.info.run_id == result.parent_run_id
    assert parent.data.metrics["trials_finished"] == 2 and parent.data.metrics["trials_stopped"] == 1
    assert parent.data.params["best.training.learning_rate"] == "0.002"
    assert parent.data.params["tune.cpus_per_trial.resolved"] == "2"
    assert marker.read_text() == "my-own-run"  # `steep train --resume` still means the user's run


def test_an_interrupted_search_kills_the_parent_run_and_writes_nothing(
    tmp_path, monkeypatch, embedded_mlflow
):
    cfg = toy_config(tmp_path, tune={"trials": 2})
    splits = split_dataset(toy_frame(60), cfg.data.split, cfg.project.seed)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ray_session, "RaySession", NoRay)
    output = tmp_path / "tuned.yaml"
    with pytest.raises(KeyboardInterrupt):
        tune(cfg, splits, output=output, search=interrupted)
    assert parent_run(cfg).info.status == "KILLED" and not output.exists()
    assert not (training.runs_root(cfg) / training.LATEST_FILE).exists()


def test_an_empty_validation_split_is_refused_before_anything_runs(tmp_path):
    cfg = toy_config(tmp_path)
    splits = split_dataset(toy_frame(60), cfg.data.split, cfg.project.seed)
    splits = dataclasses.replace(splits, validation=splits.validation.head(0))
    with pytest.raises(TuneError, match="judges trials on the validation split, and it is empty"):
        tune(cfg, splits, output=tmp_path / "tuned.yaml")
    assert not (tmp_path / "home" / "mlflow.db").exists()  # nothing recorded
