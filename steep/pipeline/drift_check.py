"""The drift check's steps as plain functions: the champion's reference, the report run, the retrain trigger.

The reference is the champion's training split rebuilt the way `steep run` made it (load -> validate ->
split); the report is an MLflow run in the `<project>-drift` experiment (values, thresholds, a plot, the
report as JSON); over threshold and outside the cool-down the trigger emits `steep.drift.detected`, whose
payload names that MLflow run, so the retrain it starts links back to the report that caused it.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from steep import deploy, tracking
from steep.config import SteepConfig, parse_duration
from steep.data import Splits
from steep.drift import DriftError, DriftReport, Reference, Sample, drift_plot
from steep.endpoints import Runtime
from steep.pipeline.prepare import ValidationFailed, prepare_splits
from steep.registry import CHAMPION, Registry, model_name


# --------------------------------------------------------------------------------------------- reference
def configured_splits(cfg: SteepConfig) -> Splits:
    """The splits `steep run` makes of the configured data now; DriftError when the data fails validation."""
    try:
        return prepare_splits(cfg).splits
    except ValidationFailed:
        raise DriftError(
            "the configured training data fails validation now, so the champion's training split cannot be "
            "rebuilt as the drift reference; `steep validate` shows why"
        ) from None


def champion_reference(cfg: SteepConfig, salt: str) -> Reference:
    """Rebuild the champion's training split: load, validate, split as `steep run` did; check the digest.

    MLflow must already point at the stack's tracking server (`Runtime.setup_tracking`).
    """
    champion = Registry(model_name(cfg)).alias(CHAMPION)
    splits = configured_splits(cfg)
    train = splits.train
    return Reference(
        sample=Sample.from_texts(train["text"], salt, groups=list(train["group"])),
        champion_version=str(champion.version) if champion is not None else None,
        digest=splits.digests["train"],
        champion_digest=(champion.tags.get("steep.split_digest.train") if champion is not None else None),
    )


def report_context(
    cfg: SteepConfig, reference: Reference | None, frame: pd.DataFrame, flow_run_id: str | None
) -> dict[str, Any]:
    """What a report says about its check: model, champion, reference, the versions that served the window."""
    return {
        "model": model_name(cfg),
        "champion_version": reference.champion_version if reference else None,
        "reference": reference.describe() if reference else None,
        "served_versions": sorted(
            {str(v) for v in frame.get("model_version", pd.Series(dtype=str)).dropna()}
        ),
        "flow_run_id": flow_run_id,
    }


# --------------------------------------------------------------------------------------------- report run
@contextlib.contextmanager
def report_run(runtime: Runtime) -> Iterator[str]:
    """The check's MLflow run for the length of the block (-> its id), ended with the block's status:
    FINISHED, FAILED on an error, KILLED on Ctrl-C. A check that fails half-way never leaves it RUNNING."""
    run_id = _start_report_run(runtime)
    with tracking.finishing(mlflow.MlflowClient(), run_id):
        yield run_id


def _start_report_run(runtime: Runtime) -> str:
    """A run in the `<project>-drift` experiment, on the runtime's tracking store; -> its run id.

    On a sqlite store (the embedded default), the experiment's artifacts lie beside the database, like the
    project's own; a tracking server keeps them where it keeps all artifacts.
    """
    cfg = runtime.cfg
    runtime.setup_tracking()
    client = mlflow.MlflowClient()
    name = f"{cfg.project.name}-drift"
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        # the URI in force, not runtime.tracking_uri: mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI,
        # which Runtime reads as a container's setting once any setup ran in this process
        if mlflow.get_tracking_uri().startswith("sqlite:"):
            location = (cfg.home / tracking.ARTIFACTS_DIR).resolve().as_uri()
        experiment_id = client.create_experiment(name, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    run = client.create_run(experiment_id, run_name="drift-check", tags={"steep.kind": "drift-check"})
    return run.info.run_id


def log_report(
    cfg: SteepConfig, run_id: str, report: DriftReport, reference: Reference | None, window: Sample
) -> None:
    """Values, thresholds, the plot and the whole report on the check's MLflow run (`report_run` ends it)."""
    client = mlflow.MlflowClient()
    for key, value in report.thresholds.items():
        client.log_param(run_id, f"threshold.{key}", value)
    for key, value in report.metrics.items():
        client.log_metric(run_id, key, float(value))
    for key, value in report.limits.items():
        client.log_metric(run_id, f"limit.{key}", float(value))
    client.log_metric(run_id, "window_rows", report.window_rows)
    tags = {
        "steep.status": report.status,
        "steep.reasons": "; ".join(report.reasons),
        "steep.window": cfg.drift.window,
        **{f"steep.{k}": str(v) for k, v in report.context.items() if not isinstance(v, dict)},
    }
    for key, value in tags.items():
        client.set_tag(run_id, key, value[:5000])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.json"
        path.write_text(json.dumps(report.as_dict(), indent=2, default=str))
        client.log_artifact(run_id, str(path), "drift")
        if reference is not None and report.metrics:
            plot = drift_plot(reference.sample, window, report, Path(tmp) / "drift.png")
            client.log_artifact(run_id, str(plot), "drift")


# --------------------------------------------------------------------------------------------- trigger
def event_payload(cfg: SteepConfig, report: DriftReport, run_id: str) -> dict[str, Any]:
    """What the finetune run receives as its `trigger` parameter (and records as steep.trigger.* tags)."""
    return {
        "drift_run_id": run_id,
        "model": model_name(cfg),
        "champion_version": report.context.get("champion_version"),
        "status": report.status,
        "window": cfg.drift.window,
        "window_rows": report.window_rows,
        "metrics": {k: round(v, 4) for k, v in report.metrics.items()},
        "limits": {k: round(v, 4) for k, v in report.limits.items()},
        "reasons": report.reasons,
        "checked_at": report.checked_at,
    }


@dataclass(frozen=True)
class Trigger:
    """What the retrain trigger did; `as_context()` goes into the report's context."""

    event: str  # the drift event, or the held event inside the cool-down
    event_id: str | None
    held: bool
    cooldown: str  # why it was (not) held
    finetune_deployed: bool  # whether a finetune deployment is there to answer the event

    def as_context(self) -> dict[str, Any]:
        return asdict(self)


def trigger_retrain(cfg: SteepConfig, report: DriftReport, run_id: str) -> Trigger:
    """Emit the drift event, or the held event when a retrain already started within the cool-down."""
    cooldown_s = parse_duration(cfg.drift.cooldown)
    now = datetime.now(UTC)
    state = deploy.cooldown_state(
        deploy.last_retrain(cfg, now - timedelta(seconds=cooldown_s)), cooldown_s, now
    )
    event_id = deploy.emit_drift(cfg, event_payload(cfg, report, run_id), held=state.held)
    return Trigger(
        event=deploy.HELD_EVENT if state.held else deploy.DRIFT_EVENT,
        event_id=event_id,
        held=state.held,
        cooldown=state.note,
        finetune_deployed=deploy.finetune_deployment_id(cfg) is not None,
    )
