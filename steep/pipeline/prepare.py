"""The start of every pipeline run: load -> validate -> split, once for `steep run`, `steep train`,
`steep data show` and the drift check's reference.

Splits are made of what passed validation: rows it dropped are in no split, so the split digests printed by
`steep data show` are the ones a model version is tagged with (`steep.split_digest.*`).
"""

from __future__ import annotations

from dataclasses import dataclass

from steep.config import SteepConfig
from steep.data import Dataset, Splits, load_dataset, split_dataset
from steep.errors import SteepError
from steep.expectations.training_data import validate_training_data
from steep.validation import ValidationReport


class ValidationFailed(SteepError):
    """The data failed its checks: nothing is trained and nothing is promoted."""

    def __init__(self, report: ValidationReport, message: str | None = None):
        self.report = report
        super().__init__(
            message or f"the training data failed validation ({self.failed}); see `steep validate`"
        )

    @property
    def failed(self) -> str:
        """The failed rules, comma-separated."""
        return ", ".join(r.name for r in self.report.failures)


@dataclass(frozen=True)
class PreparedData:
    dataset: Dataset  # as loaded, before validation
    report: ValidationReport
    splits: Splits  # of the rows that passed validation


def validate_dataset(cfg: SteepConfig, dataset: Dataset) -> ValidationReport:
    """The training-data suite over the loaded data (Data Docs under project.home)."""
    return validate_training_data(dataset.frame, cfg)


def split_validated(cfg: SteepConfig, report: ValidationReport) -> Splits:
    """Split the rows that passed validation (`report.clean`); ValidationFailed when the data failed."""
    if not report.passed or report.clean is None:
        raise ValidationFailed(report)
    return split_dataset(report.clean, cfg.data.split, cfg.project.seed)


def prepare_splits(cfg: SteepConfig) -> PreparedData:
    """Load, validate and split the configured data, as `steep run` does; ValidationFailed when it fails."""
    dataset = load_dataset(cfg)
    report = validate_dataset(cfg, dataset)
    return PreparedData(dataset, report, split_validated(cfg, report))
