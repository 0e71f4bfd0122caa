"""Which training failures reach the user as a TrainingError, without running a training (fast)."""

from __future__ import annotations

import pytest
import torch

from steep.errors import SteepError
from steep.pipeline.training import TrainingError, _translate_error
from steep.ray_jobs import train as job
from tests.conftest_train import tiny_config


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (MemoryError(), True),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 4 GB"), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
    ],
)
def test_out_of_memory_is_told_apart_from_other_runtime_errors(error, expected):
    assert job._is_out_of_memory(error) is expected


def test_a_workers_error_inside_rays_wrappers_becomes_a_training_error(tmp_path):
    from ray.exceptions import OutOfMemoryError
    from ray.train import WorkerGroupError

    cfg = tiny_config(tmp_path, tmp_path, workers=2, batch_size=8)

    def wrapped(error: BaseException) -> BaseException:
        return WorkerGroupError("training failed", worker_failures={0: RuntimeError("fine"), 1: error})

    too_large = job.BatchTooLargeError(job.oom_message(8, 2))
    assert str(_translate_error(wrapped(too_large), cfg)) == str(too_large)
    assert str(_translate_error(wrapped(SteepError("fix the config")), cfg)) == "fix the config"

    killed = _translate_error(wrapped(OutOfMemoryError("Task was killed due to the node running low")), cfg)
    assert isinstance(killed, TrainingError) and str(killed) == job.oom_message(8, 2)

    assert _translate_error(wrapped(RuntimeError("a bug")), cfg) is None  # re-raised as it is


def test_a_placement_that_never_came_names_the_timeout_and_what_to_do(tmp_path):
    """Ray Train gives up waiting for its placement group with a controller failure; the user reads why."""
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError
    from ray.train.v2.api.exceptions import ControllerError

    cfg = tiny_config(tmp_path, tmp_path, workers=2, batch_size=8, placement_timeout="2m")
    told = _translate_error(ControllerError(WorkerGroupStartupTimeoutError(num_workers=2)), cfg)
    assert isinstance(told, TrainingError)
    assert "training.placement_timeout=2m" in str(told) and "2 worker(s)" in str(told)
    assert "steep provision" in str(told)
