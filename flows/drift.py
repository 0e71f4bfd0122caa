"""The drift check as a Prefect flow: window -> reference -> GX suite -> decide -> report -> trigger.

Orchestration only: each task calls plain functions of steep.drift, expectations.inference_batch and
steep.deploy. Every check is logged to MLflow (experiment `<project>-drift`: values, thresholds, a plot, the
report as JSON); over threshold and outside the cool-down it emits `steep.drift.detected`, whose payload
names that MLflow run, so the retrain it triggers links back to the report that caused it.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from expectations.inference_batch import BatchResult, run_inference_suite
from steep import deploy
from steep.config import SteepConfig, parse_duration
from steep.drift import DriftReport, Reference, Sample, champion_reference, compare, drift_plot
from steep.inference_log import InferenceLog
from steep.quiet import quiet_third_parties
from steep.registry import model_name
from steep.runtime import Runtime


# --------------------------------------------------------------------------------------------- tasks
@task(name="read inference window", cache_policy=NO_CACHE)
def window_task(cfg: SteepConfig) -> pd.DataFrame:
    log = InferenceLog.for_config(cfg)
    frame = log.window(timedelta(seconds=parse_duration(cfg.drift.window)))
    get_run_logger().info("%d inference rows in the last %s (%s)", len(frame), cfg.drift.window, log.root)
    return frame


@task(name="rebuild reference", cache_policy=NO_CACHE)
def reference_task(cfg: SteepConfig) -> Reference:
    reference = champion_reference(cfg, InferenceLog.for_config(cfg).salt)
    logger = get_run_logger()
    (logger.info if reference.matches else logger.warning)("reference: %s", reference.describe())
    return reference


@task(name="inference-batch suite", cache_policy=NO_CACHE)
def suite_task(cfg: SteepConfig, frame: pd.DataFrame) -> BatchResult:
    result = run_inference_suite(frame, cfg)
    get_run_logger().info(
        "GX inference-batch suite: %d of %d rows fail %s",
        result.failing_rows,
        result.rows,
        result.summary() or "nothing",
    )
    return result


@task(name="decide", cache_policy=NO_CACHE)
def decide_task(cfg: SteepConfig, reference: Reference | None, window: Sample, failing: float) -> DriftReport:
    empty = Sample([], [])
    report = compare(cfg.drift, reference.sample if reference else empty, window, failing)
    get_run_logger().info("drift check: %s (%s)", report.status, "; ".join(report.reasons))
    return report


@task(name="retrain trigger", cache_policy=NO_CACHE)
def trigger_task(cfg: SteepConfig, report: DriftReport, run_id: str) -> dict[str, Any]:
    """Emit the drift event unless a retrain already started within the cool-down."""
    log = get_run_logger()
    cooldown_s = parse_duration(cfg.drift.cooldown)
    now = datetime.now(UTC)
    state = deploy.cooldown_state(
        deploy.last_retrain(cfg, now - timedelta(seconds=cooldown_s)), cooldown_s, now
    )
    payload = event_payload(cfg, report, run_id)
    event_id = deploy.emit_drift(cfg, payload, held=state.held)
    deployed = deploy.finetune_deployment_id(cfg) is not None
    if state.held:
        log.info("drift, but no retrain now: %s", state.note)
    elif deployed:
        log.info("emitted %s (event %s): the finetune trigger starts a retrain", deploy.DRIFT_EVENT, event_id)
    else:
        log.warning(
            "emitted %s, but this server has no finetune deployment: `steep deploy` to retrain on drift",
            deploy.DRIFT_EVENT,
        )
    return {
        "event": deploy.HELD_EVENT if state.held else deploy.DRIFT_EVENT,
        "event_id": event_id,
        "held": state.held,
        "cooldown": state.note,
        "finetune_deployed": deployed,
    }


@task(name="log drift report", cache_policy=NO_CACHE)
def log_task(
    cfg: SteepConfig, run_id: str, report: DriftReport, reference: Reference | None, window: Sample
) -> None:
    """Values, thresholds, the plot and the whole report on the check's MLflow run."""
    import mlflow

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
    client.set_terminated(run_id)


# --------------------------------------------------------------------------------------------- helpers
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


def start_report_run(cfg: SteepConfig) -> str:
    """A run in the `<project>-drift` experiment (artifacts beside an embedded database)."""
    import mlflow

    from steep import tracking

    client = mlflow.MlflowClient()
    name = f"{cfg.project.name}-drift"
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if mlflow.get_tracking_uri().startswith("sqlite:"):
            location = (cfg.home / tracking.ARTIFACTS_DIR).resolve().as_uri()
        experiment_id = client.create_experiment(name, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    run = client.create_run(experiment_id, run_name="drift-check", tags={"steep.kind": "drift-check"})
    return run.info.run_id


# --------------------------------------------------------------------------------------------- flow
@flow(name="steep-drift-check", log_prints=True)
def drift_check_flow(cfg: SteepConfig, emit: bool = True) -> DriftReport:
    """One drift check; `emit=False` decides and reports without ever starting a retrain."""
    from prefect.runtime import flow_run

    quiet_third_parties()  # a worker on the stack runs this flow without steep's CLI start-up
    Runtime.of(cfg).setup_tracking()
    frame = window_task(cfg)
    window = Sample.from_log(frame) if len(frame) else Sample([], [])
    reference, failing = None, 0.0
    if len(window) >= cfg.drift.min_window_rows:
        reference = reference_task(cfg)
        failing = suite_task(cfg, frame).failing_share
    report = decide_task(cfg, reference, window, failing)
    report.context.update(
        model=model_name(cfg),
        champion_version=reference.champion_version if reference else None,
        reference=reference.describe() if reference else None,
        served_versions=sorted({str(v) for v in frame.get("model_version", pd.Series(dtype=str)).dropna()}),
        flow_run_id=str(flow_run.id) if flow_run.id else None,
    )
    run_id = start_report_run(cfg)
    report.context["drift_run_id"] = run_id
    if report.drifted and emit:
        report.context.update(trigger_task(cfg, report, run_id))
    log_task(cfg, run_id, report, reference, window)
    return report
