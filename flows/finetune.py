"""The `steep run` pipeline as a Prefect flow.

load -> validate -> split -> train -> evaluate -> gate -> register.

Orchestration only: each task calls a plain steep function and logs what it decided.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow, get_run_logger, task

from steep.config import SteepConfig
from steep.data import Dataset, Splits, load_dataset, split_dataset
from steep.errors import SteepError
from steep.validation import ValidationReport, validate_frame


class ValidationFailed(SteepError):
    """The data failed its checks: nothing is trained and nothing is promoted."""


@dataclass
class RunOutcome:
    dataset: Dataset
    validation: ValidationReport
    splits: Splits


@task(name="load data")
def load_task(cfg: SteepConfig) -> Dataset:
    dataset = load_dataset(cfg)
    get_run_logger().info(
        "loaded %d rows from %s (digest %s)", len(dataset.frame), dataset.path, dataset.digest[:12]
    )
    return dataset


@task(name="validate data")
def validate_task(cfg: SteepConfig, dataset: Dataset) -> ValidationReport:
    report = validate_frame(dataset.frame, cfg)
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
    splits = split_dataset(report.clean, cfg.data.split, cfg.project.seed)
    get_run_logger().info("split %s", {name: len(part) for name, part in splits.items()})
    return splits


@flow(name="steep-finetune", log_prints=True)
def finetune_flow(cfg: SteepConfig) -> RunOutcome:
    dataset = load_task(cfg)
    report = validate_task(cfg, dataset)
    if not report.passed:
        raise ValidationFailed(
            "validation failed ("
            + ", ".join(r.name for r in report.failures)
            + "): nothing trained, nothing "
            f"promoted. See the Data Docs: {report.data_docs}"
        )
    splits = split_task(cfg, report)
    return RunOutcome(dataset=dataset, validation=report, splits=splits)
