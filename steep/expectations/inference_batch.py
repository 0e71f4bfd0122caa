"""The Great Expectations suite for inference batches: what the server was asked, row by row.

Runs on the inference log's statistics columns (`steep.inference_log.COLUMNS`), which exist whether or not
texts are logged: blank inputs, inputs outside the length bounds the training data was held to, empty
summaries, and PII by the same `validation.pii` policy as training data. A row fails when it breaks any
blocking rule; the failing share is one of the drift check's signals. "warn" PII rules are reported, not
counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.expectations.metadata_types import FailureSeverity

from steep.config import SteepConfig
from steep.validation import Rule, gx_context, run_suite

SUITE_NAME = "steep_inference_batch"
REQUIRED_COLUMNS = ["n_chars", "n_words", "summary_words", "blank", "has_email", "has_phone"]


@dataclass(frozen=True)
class RuleOutcome:
    name: str
    blocking: bool
    success: bool
    unexpected_count: int


@dataclass
class BatchResult:
    rows: int
    failing_rows: int
    rules: list[RuleOutcome] = field(default_factory=list)

    @property
    def failing_share(self) -> float:
        return self.failing_rows / self.rows if self.rows else 0.0

    def summary(self) -> dict[str, int]:
        """Rule name -> rows breaking it, for rules that some row broke."""
        return {r.name: r.unexpected_count for r in self.rules if r.unexpected_count}


def inference_rules(cfg: SteepConfig) -> list[Rule]:
    """The rules, bounds from `validation` (what training data was held to) and `serving`."""
    v = cfg.validation
    max_chars = min(v.text_max_chars, cfg.serving.max_text_chars)
    rules = [
        Rule(
            "columns present",
            gxe.ExpectTableColumnsToMatchSet(column_set=REQUIRED_COLUMNS, exact_match=False),
            False,
            True,
        ),
        Rule(
            "text not blank", gxe.ExpectColumnValuesToBeInSet(column="blank", value_set=[False]), True, True
        ),
        Rule(
            "text length in bounds",
            gxe.ExpectColumnValuesToBeBetween(
                column="n_chars", min_value=v.text_min_chars, max_value=max_chars
            ),
            True,
            True,
        ),
        Rule("text has words", gxe.ExpectColumnValuesToBeBetween(column="n_words", min_value=1), True, True),
        Rule(
            "summary not empty",
            gxe.ExpectColumnValuesToBeBetween(column="summary_words", min_value=1),
            True,
            True,
        ),
    ]
    for name, column, policy in (
        ("no emails", "has_email", v.pii.emails),
        ("no phone numbers", "has_phone", v.pii.phone_numbers),
    ):
        if policy == "ignore":
            continue
        severity = FailureSeverity.CRITICAL if policy == "fail" else FailureSeverity.WARNING
        rules.append(
            Rule(
                name,
                gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[False], severity=severity),
                True,
                policy == "fail",
            )
        )
    for rule in rules:
        rule.expectation.meta = {"steep_rule": rule.name, "blocking": rule.blocking}
    return rules


def batch_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns the suite reads, typed; a window without them fails "columns present"."""
    table = frame[[c for c in REQUIRED_COLUMNS if c in frame.columns]].reset_index(drop=True)
    for column in ("blank", "has_email", "has_phone"):
        if column in table:
            table[column] = table[column].astype(bool)
    return table


def run_inference_suite(frame: pd.DataFrame, cfg: SteepConfig, data_docs: bool = False) -> BatchResult:
    """Validate one inference window with GX; -> rows, failing rows, per-rule counts."""
    table = batch_table(frame)
    if table.empty:
        return BatchResult(rows=0, failing_rows=0)
    outcomes = run_suite(
        gx_context(cfg.home),
        SUITE_NAME,
        inference_rules(cfg),
        table,
        source="steep_inference",
        asset="inference_batch",
        data_docs=data_docs,
    )
    rules, failing = [], set()
    for out in outcomes:
        index = out.unexpected_index
        if not out.rule.row_level and not out.success:
            index = list(range(len(table)))  # a table-level failure (missing columns) fails every row
        if out.rule.blocking:
            failing.update(index)
        rules.append(RuleOutcome(out.rule.name, out.rule.blocking, out.success, len(index)))
    return BatchResult(rows=len(table), failing_rows=len(failing), rules=rules)
