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
