"""`steep tune` end to end: a hyperparameter search over training and decoding settings, judged on the
validation split only (the test split stays untouched for the gate).

Read `tune` top to bottom: plan the space (every value it can take checked against the config before any
trial runs) -> a parent MLflow run -> Ray (the stack's, else a local one) -> the search: each trial is one Ray
task (`run_trial`) that trains in its own process (steep.pipeline.training.train with training.workers=0,
recorded as a child run), reports the validation loss at each epoch's end (ASHA stops the worse half of the
trials at epochs 1, 2, 4, ...), then generates on the validation split with its decoding settings and
reports ROUGE -> the best finished trial on the gate metric (`evaluation.metric`) -> its settings as a
steep.yaml overlay (the user's own file is never written) and, on the parent run, the table of trials, a
plot and the overlay. A failed trial is reported and the search goes on; when no trial finishes there is an
error and no overlay.

The search itself is a parameter (`search`, a `Search`): Ray Tune (`ray_search`) for steep, a fake in tests
of what happens around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import mlflow

from steep import heartbeat, tracking
from steep.config import SteepConfig
from steep.data import Splits
from steep.pipeline import ray_session, training
from steep.pipeline.tune.mlflow_runs import close_children, log_parent, start_parent
from steep.pipeline.tune.outcomes import TrialOutcome, best_trial, nothing_finished
from steep.pipeline.tune.overlay import (
    check_output,
    overlay_header,
    overlay_settings,
    overlay_yaml,
    set_lines,
)
from steep.pipeline.tune.space import SpacePlan, TuneError, plan_space
from steep.pipeline.tune.trial import TrialContext, trial_context


class Search(Protocol):
    """Runs the trials of `plan` (each gets `context`) and says how each ended, in trial order; `log` takes
    one line per trial as it ends. `multi_node`: the Ray cluster has several nodes (lines name the node)."""

    def __call__(
        self,
        cfg: SteepConfig,
        plan: SpacePlan,
        context: TrialContext,
        *,
        multi_node: bool,
        log: Callable[[str], None],
    ) -> list[TrialOutcome]: ...


def ray_search(
    cfg: SteepConfig, plan: SpacePlan, context: TrialContext, *, multi_node: bool, log: Callable[[str], None]
) -> list[TrialOutcome]:
    """The search steep runs: Ray Tune (steep.pipeline.tune.ray_tune, imported only now: Ray is heavy)."""
    from steep.pipeline.tune import ray_tune

    return ray_tune.search(cfg, plan, context, multi_node=multi_node, log=log)


@dataclass
class TuneResult:
    parent_run_id: str
    parent_name: str
    metric: str
    outcomes: list[TrialOutcome]
    best: TrialOutcome
    defaults: TrialOutcome | None
    overlay: Path
    settings: dict[str, Any]
    set_lines: list[str]
    trials: int  # asked for
    seconds: float


def tune(
    cfg: SteepConfig,
    splits: Splits,
    *,
    output: Path,
    config_files: Sequence[Path] = (),
    tracking_uri: str | None = None,
    ray_address: str | None = None,
    log: Callable[[str], None] = print,
    search: Search = ray_search,
) -> TuneResult:
    """Search `tune.space` with `tune.trials` trials within `tune.time_budget`; write the best settings to
    `output` as an overlay of the config files (which are never written) and return the search's result.

    Trials run on the Ray at `ray_address` (a stack's), else on a local Ray started here; MLflow records go
    to `tracking_uri`, else the embedded store under project.home. The parent run ends FINISHED, KILLED
    (Ctrl-C) or FAILED (an error, which goes on up), as tracking.finishing says.
    """
    t0 = time.time()
    plan = plan_space(cfg)
    if splits.validation.empty:
        raise TuneError(
            "steep tune judges trials on the validation split, and it is empty: set data.split.validation "
            "(e.g. 0.1, taken from train) so that some documents are held out for it"
        )
    output = check_output(output, config_files)
    experiment_id = tracking.setup(cfg, tracking_uri)
    client = mlflow.MlflowClient()
    parent_id, parent_name = start_parent(cfg, client, experiment_id, plan, splits)
    latest = training.latest_run(cfg)  # trials start runs: `steep train --resume` keeps meaning yours
    try:
        with tracking.finishing(client, parent_id):
            with heartbeat.Heartbeat(client, parent_id), ray_session.RaySession(ray_address) as ray:
                node_cpus = ray.connect()
                threads = cfg.tune.cpus_per_trial or min(node_cpus)
                context = trial_context(
                    cfg, splits, tracking_uri=tracking_uri, parent_run_id=parent_id, parent_name=parent_name,
                    threads=threads,
                )  # fmt: skip
                client.log_param(parent_id, "tune.cpus_per_trial.resolved", str(threads))
                outcomes = search(cfg, plan, context, multi_node=len(node_cpus) > 1, log=log)
            close_children(client, experiment_id, parent_id, outcomes)
            best = best_trial(outcomes)
            if best is None:
                raise TuneError(nothing_finished(outcomes, cfg))
            defaults = next((o for o in outcomes if o.is_defaults), None)
            settings = overlay_settings(best, plan)
            header = overlay_header(
                cfg, best, defaults, outcomes, parent_id, parent_name, config_files, output
            )
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(overlay_yaml(settings, header), encoding="utf-8")
            log_parent(cfg, client, parent_id, outcomes, best, defaults, settings, output)
    finally:
        _restore_latest(cfg, latest)
    return TuneResult(
        parent_run_id=parent_id, parent_name=parent_name, metric=cfg.evaluation.metric, outcomes=outcomes,
        best=best, defaults=defaults, overlay=output, settings=settings, set_lines=set_lines(settings),
        trials=len(outcomes), seconds=time.time() - t0,
    )  # fmt: skip


def _restore_latest(cfg: SteepConfig, latest: str | None) -> None:
    """The trials' runs are not what `steep train --resume` should pick up: the marker goes back."""
    marker = training.runs_root(cfg) / training.LATEST_FILE
    if latest is not None:
        marker.write_text(latest)
    elif marker.exists():
        marker.unlink()
