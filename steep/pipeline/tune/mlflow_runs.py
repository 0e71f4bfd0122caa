"""The MLflow runs of a `steep tune` search: the parent run (how the search was set up; at its end the best
settings, the counts, the table of trials, the plot and the overlay) and the closing of the child runs of
trials that were stopped mid-run. Each trial records its own child run (steep.pipeline.tune.trial).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Metric, Param

from steep import tracking
from steep.config import SteepConfig
from steep.data import Splits
from steep.pipeline.tune.outcomes import TrialOutcome
from steep.pipeline.tune.plot import trials_plot
from steep.pipeline.tune.space import SpacePlan
from steep.pipeline.tune.trial import OUTCOME_TAG, TRIAL_TAG, param_text

KIND_TAG = "steep.kind"  # "tune" on the parent run


def start_parent(
    cfg: SteepConfig, client: Any, experiment_id: str, plan: SpacePlan, splits: Splits
) -> tuple[str, str]:
    """The parent run: how the search is set up (space, budget, data digests of train and validation)."""
    name = f"{cfg.project.name}-tune-{time.strftime('%Y%m%d-%H%M%S')}"
    tags = {
        **tracking.system_info(),
        KIND_TAG: "tune",
        "mlflow.note.content": "the trials are its child runs",
    }
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    t = cfg.tune
    params = {
        "tune.trials": str(t.trials), "tune.time_budget": t.time_budget,
        "tune.early_stopping": str(t.early_stopping), "tune.include_defaults": str(t.include_defaults),
        "evaluation.metric": cfg.evaluation.metric,
        "model.source": cfg.model.source,
        **{f"tune.space.{k}": json.dumps(d.model_dump(mode="json")) for k, d in plan.space.items()},
        **{f"data.digest.{k}": v for k, v in splits.digests.items() if k in ("train", "validation")},
    }  # fmt: skip
    items = [Param(k, v[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[start : start + 100])
    return run.info.run_id, name


def close_children(client: Any, experiment_id: str, parent_id: str, outcomes: Sequence[TrialOutcome]) -> None:
    """Child runs of trials that were stopped (their process ended mid-run): KILLED with the reason, and
    any validation loss Tune received that the run missed logging."""
    runs = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=1000)
    by_trial = {r.data.tags.get(TRIAL_TAG): r for r in runs}
    for outcome in outcomes:
        run = by_trial.get(outcome.trial_id)
        if run is None:
            continue
        outcome.run_id = outcome.run_id or run.info.run_id
        if outcome.status != "stopped":
            continue
        run_id = run.info.run_id
        known = {m.step for m in client.get_metric_history(run_id, "val_loss")}
        now = int(time.time() * 1000)
        missing = [
            Metric("val_loss", row["val_loss"], now, int(row["step"]))
            for row in outcome.val_losses
            if int(row["step"]) not in known
        ]
        if missing:
            client.log_batch(run_id, metrics=missing)
        client.set_tag(run_id, OUTCOME_TAG, outcome.reason)
        client.set_terminated(run_id, status="KILLED")


def log_parent(
    cfg: SteepConfig, client: Any, parent_id: str, outcomes: Sequence[TrialOutcome], best: TrialOutcome,
    defaults: TrialOutcome | None, settings: dict[str, Any], output: Path,
) -> None:  # fmt: skip
    """The best settings, the counts, the table of trials, the plot and the overlay, on the parent run."""
    metric = cfg.evaluation.metric
    now = int(time.time() * 1000)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("finished", "stopped", "failed")}
    metrics = {f"best_val_{metric}": best.val_score or 0.0, **{f"trials_{k}": v for k, v in counts.items()}}
    if defaults is not None and defaults.val_score is not None:
        metrics[f"defaults_val_{metric}"] = defaults.val_score
    client.log_batch(
        parent_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        params=[Param(f"best.{k}", param_text(v)[:6000]) for k, v in settings.items()],
    )
    client.set_tag(parent_id, "steep.tune.best_trial", str(best.index))
    client.set_tag(parent_id, "steep.tune.best_run_id", str(best.run_id))
    client.log_table(parent_id, trials_table(outcomes), "tune/trials.json")
    with tempfile.TemporaryDirectory() as tmp:
        plot = trials_plot(outcomes, metric, Path(tmp) / "tune_trials.png", best=best)
        client.log_artifact(parent_id, str(plot), "tune")
        client.log_artifact(parent_id, str(output), "tune")


def trials_table(outcomes: Sequence[TrialOutcome]) -> pd.DataFrame:
    """One row per trial: how it ended, its scores and settings, its child run."""
    rows = []
    for o in outcomes:
        rows.append({
            "trial": o.index, "status": o.status, "reason": o.reason, "seconds": round(o.seconds, 1),
            "val_loss": o.val_loss, "val_score": o.val_score, **o.scores,
            **{k: param_text(v) for k, v in o.settings.items()},
            "run_id": o.run_id, "defaults": o.is_defaults,
        })  # fmt: skip
    return pd.DataFrame(rows)
