"""The drift check as a Prefect flow: window -> reference -> GX suite -> decide -> report -> trigger.

Orchestration only: each task calls plain functions of steep.drift, expectations.inference_batch and
steep.pipeline.drift_check, and logs what they found. Every check is logged to MLflow (experiment
`<project>-drift`: values, thresholds, a plot, the report as JSON); over threshold and outside the cool-down
it emits `steep.drift.detected`, whose payload names that MLflow run, so the retrain it triggers links back
to the report that caused it. On a stack with object storage the window is read from the stack's bucket, where
the serving pods ship their inference log (steep.inference_log); on the local target, from project.home.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from steep import deploy
from steep.config import SteepConfig, parse_duration
from steep.drift import DriftReport, Reference, Sample, compare
from steep.endpoints import Runtime
from steep.expectations.inference_batch import BatchResult, run_inference_suite
from steep.inference_log import InferenceLog
from steep.pipeline import drift_check
from steep.quiet import quiet_third_parties


# --------------------------------------------------------------------------------------------- tasks
@task(name="read inference window", cache_policy=NO_CACHE)
def window_task(cfg: SteepConfig) -> pd.DataFrame:
    log = InferenceLog.for_config(cfg)
    frame = log.window(timedelta(seconds=parse_duration(cfg.drift.window)))
    get_run_logger().info("%d inference rows in the last %s (%s)", len(frame), cfg.drift.window, log.location)
    return frame


@task(name="rebuild reference", cache_policy=NO_CACHE)
def reference_task(cfg: SteepConfig) -> Reference:
    reference = drift_check.champion_reference(cfg, InferenceLog.for_config(cfg).salt)
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
    trigger = drift_check.trigger_retrain(cfg, report, run_id)
    if trigger.held:
        log.info("drift, but no retrain now: %s", trigger.cooldown)
    elif trigger.finetune_deployed:
        log.info(
            "emitted %s (event %s): the finetune trigger starts a retrain",
            deploy.DRIFT_EVENT,
            trigger.event_id,
        )
    else:
        log.warning(
            "emitted %s, but this server has no finetune deployment: `steep deploy` to retrain on drift",
            deploy.DRIFT_EVENT,
        )
    return trigger.as_context()


@task(name="log drift report", cache_policy=NO_CACHE)
def log_task(
    cfg: SteepConfig, run_id: str, report: DriftReport, reference: Reference | None, window: Sample
) -> None:
    """Values, thresholds, the plot and the whole report on the check's MLflow run."""
    drift_check.log_report(cfg, run_id, report, reference, window)


# --------------------------------------------------------------------------------------------- flow
@flow(name="steep-drift-check", log_prints=True)
def drift_check_flow(cfg: SteepConfig, emit: bool = True) -> DriftReport:
    """One drift check; `emit=False` decides and reports without ever starting a retrain."""
    quiet_third_parties()  # a worker on the stack runs this flow without steep's CLI start-up
    runtime = Runtime.of(cfg)
    runtime.setup_tracking()
    frame = window_task(cfg)
    window = Sample.from_log(frame) if len(frame) else Sample([], [])
    reference, failing = None, 0.0
    if len(window) >= cfg.drift.min_window_rows:
        reference = reference_task(cfg)
        failing = suite_task(cfg, frame).failing_share
    report = decide_task(cfg, reference, window, failing)
    flow_run_id = str(flow_run.id) if flow_run.id else None
    report.context.update(drift_check.report_context(cfg, reference, frame, flow_run_id))
    with drift_check.report_run(runtime) as run_id:  # FAILED, not RUNNING, if the trigger or the log fails
        report.context["drift_run_id"] = run_id
        if report.drifted and emit:
            report.context.update(trigger_task(cfg, report, run_id))
        log_task(cfg, run_id, report, reference, window)
    return report
