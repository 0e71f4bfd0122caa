"""The `steep run` pipeline as a Prefect flow.

load -> validate -> split -> train -> evaluate -> gate -> register -> [approve] -> promote -> package

Orchestration only: each task calls plain steep functions and logs what it decided. The champion alias
moves in exactly one place, the promote task, so a failure anywhere before it leaves the served model as
it was; packaging comes after it and only builds what is already the champion.

One run per project at a time (the run lock), and each stage's outcome goes into the run's ledger as it
completes (steep/pipeline/run_ledger.py): `steep run --resume` continues a failed or killed run from its
first unfinished stage, with the same config and data, and trains nothing its model already holds.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from prefect import flow, get_client, get_run_logger, task
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run

from steep.approval import VERSION_TAG, approve_command
from steep.config import SteepConfig, parse_duration
from steep.data import Dataset, Splits, load_dataset
from steep.endpoints import Runtime
from steep.errors import SteepError
from steep.pipeline import evaluation, exports, provenance, run_ledger
from steep.pipeline.prepare import PreparedData, ValidationFailed, split_validated, validate_dataset
from steep.pipeline.training import TrainResult, new_run_name, run_recorded, train
from steep.quiet import quiet_third_parties
from steep.registry import GateDecision, Registry
from steep.scoring.scores import Evaluation
from steep.serving.package import ModelRef, bento_version, build_bento
from steep.validation import ValidationReport


class ApprovalInput(RunInput):
    """The form a reviewer fills in (Prefect UI or `steep models approve`)."""

    approve: bool
    comment: str = ""
    reviewer: str = ""


@dataclass(frozen=True)
class PackageResult:
    bento: str | None  # the tag, None when the build failed
    error: str | None = None
    retry: str | None = None  # the command that builds it again


@dataclass
class RunOutcome:
    dataset: Dataset
    validation: ValidationReport
    splits: Splits
    run_id: str | None = None
    evaluations: list[Evaluation] = field(default_factory=list)
    decision: GateDecision | None = None
    version: str | None = None
    promoted: bool = False
    approval: dict[str, Any] | None = None
    tracking_uri: str | None = None
    package: PackageResult | None = None
    resumed_from: str | None = None  # the stage a resumed run went on from


# --------------------------------------------------------------------------------------------- tasks
@task(name="load data")
def load_task(cfg: SteepConfig) -> Dataset:
    dataset = load_dataset(cfg)
    get_run_logger().info(
        "loaded %d rows from %s (digest %s)", len(dataset.frame), dataset.path, dataset.digest[:12]
    )
    return dataset


@task(name="validate data")
def validate_task(cfg: SteepConfig, dataset: Dataset) -> ValidationReport:
    report = validate_dataset(cfg, dataset)
    log = get_run_logger()
    for r in report.results:
        if r.status != "pass":
            log.info(
                "%-28s %-7s %d/%d rows, e.g. %s",
                r.name,
                r.status,
                r.unexpected_count,
                r.element_count,
                ", ".join(r.sample_ids),
            )
    log.info(
        "validation %s: %d rows in, %d rows out; Data Docs %s",
        "passed" if report.passed else "FAILED",
        report.rows_in,
        report.rows_out,
        report.data_docs,
    )
    return report


@task(name="split data")
def split_task(cfg: SteepConfig, report: ValidationReport) -> Splits:
    splits = split_validated(cfg, report)
    get_run_logger().info("split %s", {name: len(part) for name, part in splits.items()})
    return splits


@task(name="train")
def train_task(
    cfg: SteepConfig, splits: Splits, tracking_uri: str | None, ray_address: str | None, run_name: str
) -> TrainResult:
    # a resumed `steep run` whose training had begun goes on from its checkpoint
    resume = run_recorded(cfg, run_name)
    result = train(
        cfg, splits, tracking_uri=tracking_uri, ray_address=ray_address, progress=True, resume=resume,
        run_name=run_name,
    )  # fmt: skip
    get_run_logger().info(
        "trained: MLflow run %s, final loss %s, model %s",
        result.run_id,
        result.metrics.get("loss"),
        result.model_uri,
    )
    return result


@task(name="evaluate")
def evaluate_task(
    cfg: SteepConfig, splits: Splits, result: TrainResult, registry: Registry, ray_address: str | None
) -> list[Evaluation]:
    log = get_run_logger().info
    return evaluation.evaluate_run(cfg, splits, result, registry, log=log, ray_address=ray_address)


@task(name="log evaluation")
def log_evaluation_task(cfg: SteepConfig, run_id: str, splits: Splits, evaluations: list[Evaluation]) -> None:
    """Scores, the per-example predictions table and the comparison plot, on the training run."""
    evaluation.log_evaluation(cfg, run_id, splits, evaluations)


@task(name="gate")
def gate_task(cfg: SteepConfig, evaluations: list[Evaluation]) -> GateDecision:
    decision = evaluation.decide(cfg, evaluations)
    get_run_logger().info("gate: %s", decision.summary())
    return decision


@task(name="register")
def register_task(
    cfg: SteepConfig,
    registry: Registry,
    result: TrainResult,
    prepared: PreparedData,
    evaluations: list[Evaluation],
    decision: GateDecision,
) -> str:
    tags = provenance.version_tags(cfg, prepared, evaluations, decision)
    version = registry.register(result.model_uri, result.run_id, tags)
    log = get_run_logger()
    log.info("registered %s v%s as challenger", registry.name, version.version)
    export = exports.publish_export(cfg, result.model_uri, result.run_id)
    if export:
        log.info("logged the ONNX export the gate evaluated with v%s (%s)", version.version, export)
    return str(version.version)


@task(name="promote")
def promote_task(registry: Registry, version: str, reason: str) -> None:
    registry.promote(version, reason)
    get_run_logger().info("promoted %s v%s to champion", registry.name, version)


@task(name="package")
def package_task(cfg: SteepConfig, registry: Registry, version: str, run_id: str) -> PackageResult:
    """The bento of the new champion, so `bentoml serve <tag>` or a container build can ship it as is.

    A failed build is a warning, not a failed run: the champion already passed the gate and serves from the
    registry; the bento is derived from it and can be rebuilt at any time with the command it prints.
    """
    log = get_run_logger()
    out = cfg.home / "package" / bento_version(version)
    retry = f"steep package --version {version}"
    try:
        tag, _ = build_bento(cfg, ModelRef(registry.name, version, run_id), out, echo=log.info)
    except SteepError as exc:
        registry.tag(version, **{"steep.bento_error": _clip(str(exc))})
        log.warning("packaging v%s failed; the promotion stands. Retry with `%s`:\n%s", version, retry, exc)
        return PackageResult(None, f"{exc}", retry)
    registry.tag(version, **{"steep.bento": tag})
    log.info("bento %s built; serve it with `bentoml serve %s` or `steep serve`", tag, tag)
    return PackageResult(tag)


def _clip(message: str, limit: int = 500) -> str:
    """A long error for a tag: its first line (what failed) and its end (why), `limit` characters at most."""
    if len(message) <= limit:
        return message
    first = message.split("\n", 1)[0][: limit // 2]
    return f"{first}\n...\n{message[-(limit - len(first) - 5) :]}"


def ask_approval(
    cfg: SteepConfig, registry: Registry, version: str, decision: GateDecision
) -> dict[str, Any]:
    """Pause the flow run for a typed approval form; a timeout counts as a rejection."""
    log = get_run_logger()
    timeout = int(parse_duration(cfg.evaluation.approval_timeout))
    run_id = str(flow_run.id)
    with get_client(sync_client=True) as client:  # so `steep models approve` can say what a run waits for
        client.update_flow_run(flow_run.id, tags=[*(flow_run.tags or []), f"{VERSION_TAG}{version}"])
    log.info(
        "waiting up to %ss for approval of %s v%s (%s).\n  approve: %s\n  reject:  %s%s",
        timeout,
        registry.name,
        version,
        decision.summary(),
        approve_command(run_id),
        approve_command(run_id, reject=True),
        "\n  or answer the form in the Prefect UI" if _has_ui() else "",
    )
    try:
        answer = pause_flow_run(wait_for_input=ApprovalInput, timeout=timeout)
    except Exception as exc:  # Prefect raises its own timeout type; any failure to get an answer is a "no"
        return {"approve": False, "comment": f"no answer: {exc.__class__.__name__}", "reviewer": ""}
    return {"approve": answer.approve, "comment": answer.comment, "reviewer": answer.reviewer}


def _resume_tags(ledger: run_ledger.Ledger) -> dict[str, str]:
    """On a resumed run's MLflow run and version: that it was resumed, by which flow run, from where."""
    if not ledger.data["resumes"]:
        return {}
    last = ledger.data["resumes"][-1]
    return {
        "steep.resumed_from": f"{last['from']}: flow run {last['flow_run_id']} resumed {ledger.flow_run_id}"
    }


def _has_ui() -> bool:
    """A real Prefect server (the stack's, or PREFECT_API_URL's) has a UI; the embedded temporary one not."""
    return bool(os.environ.get("PREFECT_API_URL"))


# --------------------------------------------------------------------------------------------- flow
@flow(name="steep-finetune", log_prints=True)
def finetune_flow(
    cfg: SteepConfig, reason: str = "manual", trigger: dict[str, Any] | None = None, resume: str | None = None
) -> RunOutcome:
    """The pipeline; `resume`: the flow run id of a failed or killed run to continue instead."""
    quiet_third_parties()  # a worker on the stack runs this flow without steep's CLI start-up
    flow_id = str(flow_run.id)
    with run_ledger.exclusive(cfg, flow_id):
        ledger = _open_ledger(cfg, flow_id, resume)
        try:
            outcome = _pipeline(cfg, reason, trigger, ledger)
        except BaseException as exc:
            ledger.finish("failed", error=f"{type(exc).__name__}: {exc}"[:2000])
            raise
        ledger.finish("completed")
        return outcome


def _open_ledger(cfg: SteepConfig, flow_id: str, resume: str | None) -> run_ledger.Ledger:
    """A new ledger, or the resumed run's, marked running again (`_pipeline` checks its config and data
    against this run's once the data is loaded)."""
    if resume is None:
        return run_ledger.start(cfg, flow_id)
    ledger = run_ledger.to_resume(cfg, resume)
    stage = ledger.first_unfinished()
    ledger.data["resumes"].append({"flow_run_id": flow_id, "at": time.time(), "from": stage})
    ledger.note(status="running")
    get_run_logger().info("resuming `steep run` %s from %s", ledger.flow_run_id, stage)
    return ledger


def _pipeline(
    cfg: SteepConfig, reason: str, trigger: dict[str, Any] | None, ledger: run_ledger.Ledger
) -> RunOutcome:
    log = get_run_logger()
    runtime = Runtime.of(cfg)
    registry = runtime.registry()
    tracking_uri = runtime.tracking_uri
    resumes = ledger.data["resumes"]
    resumed_from = resumes[-1]["from"] if resumes else None

    dataset = load_task(cfg)
    if resumed_from is not None:  # the config and data it ran with, or no resume
        run_ledger.check_unchanged(ledger, cfg, dataset.digest)
    ledger.note(data_digest=dataset.digest)
    report = validate_task(cfg, dataset)
    if not report.passed:
        failed = ", ".join(r.name for r in report.failures)
        raise ValidationFailed(
            report,
            f"validation failed ({failed}): nothing trained, nothing promoted. "
            f"See the Data Docs: {report.data_docs}",
        )
    splits = split_task(cfg, report)
    prepared = PreparedData(dataset, report, splits)
    outcome = RunOutcome(dataset=dataset, validation=report, splits=splits, tracking_uri=tracking_uri,
                         resumed_from=resumed_from)  # fmt: skip

    trained = ledger.outcome("train")
    if trained is not None:  # the interrupted run logged its model: nothing is trained again
        result = TrainResult(**trained)
        log.info("training: done by `steep run` %s (MLflow run %s); not trained again", ledger.flow_run_id,
                 result.run_id)  # fmt: skip
    else:
        run_name = ledger.data.get("train_run_name") or new_run_name(cfg)
        ledger.note(train_run_name=run_name)  # a resume continues this MLflow run from its checkpoint
        result = train_task(cfg, splits, tracking_uri, runtime.ray_address, run_name)
        ledger.record("train", **asdict(result))
    outcome.run_id = result.run_id
    tags = provenance.run_tags(cfg, reason, trigger, report, flow_run_id=ledger.flow_run_id)
    provenance.tag_run(result.run_id, {**tags, **_resume_tags(ledger)})

    outcome.evaluations = evaluate_task(cfg, splits, result, registry, runtime.ray_address)
    ledger.record("evaluate", scores={ev.name: asdict(ev.scores) for ev in outcome.evaluations})
    log_evaluation_task(cfg, result.run_id, splits, outcome.evaluations)
    outcome.decision = gate_task(cfg, outcome.evaluations)
    registered = ledger.outcome("register")
    if registered is not None:
        outcome.version = registered["version"]
        log.info("registered v%s by `steep run` %s already", outcome.version, ledger.flow_run_id)
    else:
        outcome.version = register_task(
            cfg, registry, result, prepared, outcome.evaluations, outcome.decision
        )
        ledger.record("register", version=outcome.version)
    if resumed_from is not None:
        registry.tag(outcome.version, **_resume_tags(ledger))

    if not outcome.decision.promote:
        log.info("the champion stays: %s", outcome.decision.summary())
        return outcome
    if cfg.evaluation.require_approval:
        outcome.approval = ask_approval(cfg, registry, outcome.version, outcome.decision)
        registry.tag(outcome.version, **{"steep.approval": outcome.approval})
        if not outcome.approval["approve"]:
            log.info("not approved (%s): the champion stays", outcome.approval["comment"] or "no comment")
            return outcome
    if ledger.outcome("promote") is None:
        promote_task(registry, outcome.version, outcome.decision.summary())
        ledger.record("promote", version=outcome.version)
    outcome.promoted = True
    if cfg.serving.build_on_promote:
        outcome.package = package_task(cfg, registry, outcome.version, result.run_id)
    return outcome
