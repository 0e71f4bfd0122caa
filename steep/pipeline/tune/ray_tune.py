"""The search `steep tune` runs: Ray Tune over the space plan, each trial `run_trial` in a Ray task of its
own, ASHA stopping the worse half on the validation loss, steep's one line per trial instead of Tune's tables.

This module imports Ray at its top, so it is imported only where the search runs (steep.pipeline.tune.search
`ray_search`): Ray takes seconds to import, and `ray.tune` imports `ray.train`, which reads
RAY_TRAIN_V2_ENABLED when it is imported (as in steep.pipeline.training), so that is set first, here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")  # read when ray.train is imported (by ray.tune): below

from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from steep.config import SteepConfig, parse_duration
from steep.pipeline.tune.outcomes import (
    TrialOutcome,
    progress_line,
    short_keys,
    trial_error,
    trial_id_of,
    trial_outcome,
)
from steep.pipeline.tune.space import SpacePlan
from steep.pipeline.tune.trial import TrialContext, run_trial, short_error, trial_index


class TrialLines(tune.Callback):
    """One line per trial as it ends (steep's progress output), keeping each trial's time and outcome for
    the search's result. `outcome(trial, seconds, failed)` reads how a trial ended; `line` words it."""

    def __init__(
        self,
        outcome: Callable[[Any, float, bool], TrialOutcome],
        line: Callable[[TrialOutcome], str],
        log: Callable[[str], None],
    ) -> None:
        self.outcome, self.line, self.log = outcome, line, log
        self.seconds: dict[str, float] = {}  # trial id -> its seconds (minus its start while it runs)
        self.shown: dict[str, TrialOutcome] = {}  # trial id -> the outcome its line showed

    def __reduce__(self) -> tuple:  # Tune saves its callbacks with the experiment: the lines stay here
        return (tune.Callback, ())

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.seconds[trial.trial_id] = -time.time()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._done(trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._done(trial, failed=True)

    def _done(self, trial: Any, failed: bool) -> None:
        seconds = self.seconds.get(trial.trial_id, -time.time()) + time.time()
        self.seconds[trial.trial_id] = seconds
        outcome = self.outcome(trial, seconds, failed)
        self.shown[trial.trial_id] = outcome
        self.log(self.line(outcome))


class SilentReporter(tune.ProgressReporter):
    """Tune's progress tables, off: TrialLines prints steep's own lines."""

    def should_report(self, trials: list, done: bool = False) -> bool:
        return False

    def report(self, trials: list, done: bool, *sys_info: Any) -> None:
        return None


class RecordingASHA(ASHAScheduler):
    """ASHA on the validation loss against epochs trained; records which trials it stopped, and where.

    A trial that has trained its last epoch (its `training.epochs`, else `base_epochs`) is never stopped:
    only its generation is left, and the loss does not rank ROUGE (a trial behind on loss may win). The
    defaults' trial (trial 1 with tune.include_defaults) counts in every rung but is never stopped: it is
    the score the others are measured against.
    """

    def __init__(self, stopped: dict[str, int], *, defaults: bool, base_epochs: int, **asha: Any) -> None:
        super().__init__(**asha)
        self.stopped, self.defaults, self.base_epochs = stopped, defaults, base_epochs

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and self.defaults and trial_index(trial.trial_id) == 1:
            return TrialScheduler.CONTINUE
        last = trial.config.get("training.epochs", self.base_epochs)
        if action == TrialScheduler.STOP and int(result.get("epoch", 0)) >= int(last):
            return TrialScheduler.CONTINUE
        if action == TrialScheduler.STOP and "val_score" not in result:
            self.stopped[trial.trial_id] = int(result.get("epoch", 0))
        return action


def asha(max_epochs: int, stopped: dict[str, int], defaults: bool, base_epochs: int) -> RecordingASHA:
    """ASHA at epochs 1, 2, 4, ... up to `max_epochs`; the trials it stops go into `stopped` (id -> epoch)."""
    return RecordingASHA(
        stopped, defaults=defaults, base_epochs=base_epochs, time_attr="epoch", metric="val_loss", mode="min",
        max_t=max(1, max_epochs), grace_period=1, reduction_factor=2, stop_last_trials=False,
    )  # fmt: skip


@contextlib.contextmanager
def quiet_tune() -> Iterator[None]:
    """Steep prints one line per trial: no Tune tables, and no Tune log lines (a failed trial's traceback
    is in its error file and its child run). A level the user set on `ray.tune` stays."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic reporter, which a silent one replaces
    logger = logging.getLogger("ray.tune")
    before = logger.level
    if before == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


def search(
    cfg: SteepConfig, plan: SpacePlan, context: TrialContext, *, multi_node: bool, log: Callable[[str], None]
) -> list[TrialOutcome]:
    """Ray Tune over the plan; -> each trial's outcome, in trial order."""
    t = cfg.tune
    budget = parse_duration(t.time_budget)
    distinct = plan.distinct_points(t.trials, t.include_defaults, cfg.project.seed)
    points = distinct if distinct is not None else [dict(plan.defaults)] if t.include_defaults else []
    total = len(distinct) if distinct is not None else t.trials
    if total < t.trials:
        log(f"tune.space holds {total} distinct settings: {total} trials, not {t.trials}")
    names = short_keys(plan.keys)
    stopped: dict[str, int] = {}  # trial id -> the epoch ASHA stopped it at
    started = time.time()

    def ended(trial: Any, seconds: float, failed: bool) -> TrialOutcome:
        return trial_outcome(
            trial.trial_id, trial.config, trial.last_result or {}, seconds,
            error=trial_error(trial) if failed else None, stopped=stopped, plan=plan,
            budget_hit=time.time() - started >= budget, show_node=multi_node, defaults=t.include_defaults,
        )  # fmt: skip

    lines = TrialLines(
        ended, lambda outcome: progress_line(outcome, total, names, cfg.evaluation.metric), log
    )
    searcher = BasicVariantGenerator(points_to_evaluate=points, random_state=cfg.project.seed)
    resources = {"cpu": context.threads, "gpu": 1 if cfg.training.use_gpu else 0}
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), resources)
    max_epochs = plan.max_epochs(cfg.training.epochs)
    scheduler = (
        asha(max_epochs, stopped, defaults=t.include_defaults, base_epochs=cfg.training.epochs)
        if t.early_stopping
        else None
    )
    tuner = tune.Tuner(
        trainable,
        param_space=plan.domains(),
        tune_config=tune.TuneConfig(
            num_samples=total, search_alg=searcher, scheduler=scheduler, time_budget_s=budget
        ),
        run_config=tune.RunConfig(
            name=context.parent_name,
            storage_path=str((cfg.home / "tune").resolve()),
            verbose=0,
            progress_reporter=SilentReporter(),
            callbacks=[lines],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        ),
    )
    with quiet_tune():
        grid = tuner.fit()
    outcomes = []
    for result in grid:
        trial_id = (result.metrics or {}).get("trial_id") or trial_id_of(result.path)
        # a trial the callback never saw end (the budget ran out) is read from its last result
        outcome = lines.shown.get(trial_id) or trial_outcome(
            trial_id, result.config or {}, result.metrics or {}, 0.0, error=result.error, stopped=stopped,
            plan=plan, budget_hit=True, show_node=multi_node, defaults=t.include_defaults,
        )  # fmt: skip
        if result.error is not None:  # the grid has the exception itself
            outcome.status, outcome.reason = "failed", short_error(result.error)
        history = result.metrics_dataframe
        if history is not None and {"val_loss", "epoch", "step"} <= set(history.columns):
            rows = history.dropna(subset=["val_loss", "epoch"]).drop_duplicates("epoch", keep="first")
            outcome.val_losses = rows[["epoch", "step", "val_loss"]].astype(float).to_dict("records")
        outcomes.append(outcome)
    return sorted(outcomes, key=lambda o: o.index)
