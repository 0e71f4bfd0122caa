"""How each `steep tune` trial ended: finished (scored on the validation split), stopped (by ASHA's early
stopping or the time budget) or failed (with the user's error, found inside Ray's wrappers); the best of
them, and the one line per trial the user reads as the search goes.

ASHA itself (which trials stop, and where) is a Ray Tune scheduler: steep.pipeline.tune.ray_tune.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from steep.config import SteepConfig
from steep.pipeline.tune.space import SpacePlan, settle
from steep.pipeline.tune.trial import short_error, trial_index
from steep.registry import METRIC_LABELS

Status = Literal["finished", "stopped", "failed"]


@dataclass
class TrialOutcome:
    """A trial as the search ended it."""

    index: int
    trial_id: str
    settings: dict[str, Any]
    status: Status
    seconds: float = 0.0
    val_score: float | None = None  # the gate metric on the validation split, 0-1
    scores: dict[str, float] = field(default_factory=dict)  # val_rouge1/2/L, val_length_ratio
    val_losses: list[dict[str, float]] = field(default_factory=list)  # epoch, step, val_loss per epoch
    run_id: str | None = None
    reason: str = ""  # why it stopped or failed
    is_defaults: bool = False
    node: str = ""

    @property
    def val_loss(self) -> float | None:
        return self.val_losses[-1]["val_loss"] if self.val_losses else None


def best_trial(outcomes: Sequence[TrialOutcome]) -> TrialOutcome | None:
    """The finished trial with the highest validation score (ties: the lower validation loss, then the
    earlier trial); None when no trial finished."""
    finished = [o for o in outcomes if o.status == "finished" and o.val_score is not None]
    if not finished:
        return None

    def rank(o: TrialOutcome) -> tuple[float, float, int]:
        loss = o.val_loss if o.val_loss is not None and math.isfinite(o.val_loss) else math.inf
        return (-(o.val_score or 0.0), loss, o.index)

    return min(finished, key=rank)


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """`training.lora.r` -> `lora.r`: the section dropped where that stays unambiguous."""
    short = {k: k.split(".", 1)[1] if "." in k else k for k in keys}
    clashes = {s for s in short.values() if list(short.values()).count(s) > 1}
    return {k: k if s in clashes else s for k, s in short.items()}


def describe(settings: dict[str, Any], names: dict[str, str]) -> str:
    """A trial's settings on one line: `learning_rate=0.0006132 lora.r=16`."""
    return " ".join(f"{names.get(k, k)}={_shown(v)}" for k, v in settings.items())


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def progress_line(outcome: TrialOutcome, total: int, names: dict[str, str], metric: str) -> str:
    """One line per finished trial: which, how it ended, its settings, validation loss and score, time."""
    head = f"trial {outcome.index}/{total}"
    settings = describe(outcome.settings, names) + (" (the defaults)" if outcome.is_defaults else "")
    where = f" on {outcome.node}" if outcome.node else ""
    took = f"{outcome.seconds:.0f} s{where}"
    loss = f"val loss {outcome.val_loss:.3f}" if outcome.val_loss is not None else "no val loss"
    if outcome.status == "finished":
        score = (outcome.val_score or 0.0) * 100
        return f"{head} finished in {took}: {settings} | {loss} | val {METRIC_LABELS[metric]} {score:.2f}"
    if outcome.status == "stopped":
        return f"{head} {outcome.reason} after {took}: {settings} | {loss}"
    return f"{head} failed after {took}: {settings} | {outcome.reason}"


def trial_outcome(
    trial_id: str, config: dict[str, Any], last: dict[str, Any], seconds: float, *, error: Any,
    stopped: dict[str, int], plan: SpacePlan, budget_hit: bool, show_node: bool, defaults: bool,
) -> TrialOutcome:  # fmt: skip
    """A trial's outcome from its last result: finished (scored), stopped (by ASHA or the budget), failed."""
    index = trial_index(trial_id)
    settings = {key: settle(config[key]) for key in plan.keys if key in config}
    outcome = TrialOutcome(
        index=index, trial_id=trial_id, settings=settings, status="finished",
        seconds=seconds or float(last.get("time_total_s") or 0.0), run_id=last.get("run_id"),
        is_defaults=defaults and index == 1,  # points_to_evaluate come first: the defaults are trial 1
        node=str(last.get("node", "")) if show_node else "",
    )  # fmt: skip
    if last.get("val_loss") is not None and last.get("epoch") is not None:
        outcome.val_losses = [{k: float(last.get(k) or 0.0) for k in ("epoch", "step", "val_loss")}]
    if error is not None:
        outcome.status, outcome.reason = "failed", short_error(error)
    elif last.get("val_score") is not None:
        outcome.val_score = float(last["val_score"])
        outcome.scores = {
            k: float(last[k]) for k in last if k.startswith("val_rouge") or k == "val_length_ratio"
        }
    elif trial_id in stopped:
        outcome.status = "stopped"
        outcome.reason = (
            f"stopped early at epoch {stopped[trial_id]} (ASHA: its val loss was in the worse half)"
        )
    else:
        outcome.status = "stopped"
        outcome.reason = "stopped by the time budget" if budget_hit else "stopped before it was scored"
    return outcome


def trial_error(trial: Any) -> BaseException | str:
    """A failed trial's error as Tune has it when it calls back: the pickled exception once it is in the
    experiment's storage, before that the last line of its error file."""
    found = trial.get_pickled_error()
    if found is not None:
        return found
    path = Path(trial.error_file) if trial.error_file else None
    lines = (
        [line for line in path.read_text().splitlines() if line.strip()] if path and path.is_file() else []
    )
    return lines[-1] if lines else "failed (see the trial's error file under project.home/tune)"


def trial_id_of(path: str | None) -> str:
    """A trial's id from its folder name (`run_trial_1a2b3_00004_4_...`), for a trial that never reported."""
    found = re.search(r"_([0-9a-f]{5}_\d{5})_", Path(path).name) if path else None
    return found.group(1) if found else ""


def nothing_finished(outcomes: Sequence[TrialOutcome], cfg: SteepConfig) -> str:
    """The error when no trial finished: why each ended, or that none ran within the budget."""
    if not outcomes:
        return (
            f"no trial ran within tune.time_budget={cfg.tune.time_budget}; raise it (--time-budget) or "
            "make a trial shorter (training.max_steps, fewer epochs). No overlay written"
        )
    lines = [f"  trial {o.index}: {o.status}: {o.reason}" for o in outcomes]
    return (
        f"none of the {len(outcomes)} trials finished, so there is no best setting and no overlay was "
        "written:\n" + "\n".join(lines)
    )
