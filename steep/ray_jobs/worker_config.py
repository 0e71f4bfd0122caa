"""What the training driver hands every worker, typed: a renamed field fails where it is built, not on a
worker minutes into a run.

Ray Train passes a worker one dict (`train_loop_config`); it carries this object under one key, and Ray
serializes it like any other value. The driver tokenizes once, so the examples travel as token ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steep import models
from steep.config import SteepConfig

Example = dict[str, list[int]]  # input_ids and labels of one (text, summary) pair
LOOP_KEY = "job"  # the one key of Ray's train_loop_config
FAULT_ENV = "STEEP_FAULT_AT_STEP"  # a drill: one worker crashes once at that step, then the run restarts


@dataclass(frozen=True)
class WorkerConfig:
    cfg: SteepConfig
    model_dir: str
    kind: models.Kind
    prompt_format: models.PromptFormat
    examples: list[Example]
    threads: int  # torch threads per worker: the driver splits a node's CPUs among its workers
    validation_examples: list[Example] = field(default_factory=list)  # with training.validation_loss
    sink: Any = None  # where rank 0 puts progress events (a queue here, or the Ray queue on the head)
    strategy: str = "PACK"  # Ray's placement of the workers: PACK or STRICT_SPREAD
    local_checkpoint_root: str | None = None  # in-process runs: Ray keeps no checkpoints, the loop does
    resume_from: str | None = None  # a checkpoint on disk newer than the one Ray registered
    fault_at_step: int | None = None  # FAULT_ENV's step, for tests and drills
    fault_marker: str | None = None  # the file that says the fault happened once

    def loop_config(self) -> dict[str, Any]:
        """What Ray's TorchTrainer takes as train_loop_config."""
        return {LOOP_KEY: self}

    @classmethod
    def from_loop_config(cls, config: dict[str, Any]) -> WorkerConfig:
        job = config[LOOP_KEY]
        if not isinstance(job, cls):
            raise TypeError(f"train_loop_config[{LOOP_KEY!r}] is a {type(job).__name__}, not a WorkerConfig")
        return job
