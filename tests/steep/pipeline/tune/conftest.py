"""Helpers for the tests of steep.pipeline.tune: a config with a space, a trial's outcome."""

from __future__ import annotations

from steep.config import SteepConfig
from steep.pipeline.tune import TrialOutcome


def with_space(space: dict, **sections) -> SteepConfig:
    return SteepConfig.model_validate({"tune": {"space": space}, **sections})


def outcome(index, status="finished", score=None, loss=None, **kw) -> TrialOutcome:
    losses = [{"epoch": 1.0, "step": 5.0, "val_loss": loss}] if loss is not None else []
    return TrialOutcome(index, f"abcde_{index - 1:05d}", kw.pop("settings", {"training.learning_rate": 1e-3}),
                        status, val_score=score, val_losses=losses, **kw)  # fmt: skip
