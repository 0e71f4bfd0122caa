"""The driver's hand-off to the workers is typed, and survives Ray's serialization whole."""

from __future__ import annotations

import pytest
from ray import cloudpickle

from steep.pipeline.training import prepare, worker_config
from steep.ray_jobs.worker_config import FAULT_ENV, LOOP_KEY, WorkerConfig
from tests.conftest_train import tiny_config, toy_splits


def test_built_from_a_config_it_round_trips_through_ray_serialization(causal_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "5")
    cfg = tiny_config(tmp_path / "home", causal_dir, validation_loss=True)
    prepared = prepare(cfg, toy_splits(cfg))
    job = worker_config(cfg, prepared, tmp_path / "run")
    assert job.cfg == cfg and job.kind == "causal" and job.examples == prepared.examples
    assert job.validation_examples == prepared.validation and job.validation_examples
    assert job.fault_at_step == 5 and job.fault_marker == str(tmp_path / "run" / "injected-failure")

    shipped = cloudpickle.loads(cloudpickle.dumps(job.loop_config()))  # what a Ray worker receives
    assert set(shipped) == {LOOP_KEY}
    received = WorkerConfig.from_loop_config(shipped)
    assert received == job and received is not job
    assert received.prompt_format.instruction == cfg.model.instruction


def test_a_loop_config_without_one_is_refused_by_name():
    with pytest.raises(TypeError, match="not a WorkerConfig"):
        WorkerConfig.from_loop_config({LOOP_KEY: {"cfg": {}}})
