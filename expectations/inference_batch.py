"""The Great Expectations suite for inference batches: what the server was asked, row by row.

Runs on the inference log's statistics columns (`steep.inference_log.COLUMNS`), which exist whether or not
texts are logged: blank inputs, inputs outside the length bounds the training data was held to, empty
summaries, and PII by the same `validation.pii` policy as training data. A row fails when it breaks any
blocking rule; the failing share is one of the drift check's signals. "warn" PII rules are reported, not
counted.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.expectations.metadata_types import FailureSeverity

from expectations.training_data import Rule
from steep.config import SteepConfig

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
    import great_expectations as gx

    from steep.validation import _gx_context

    table = batch_table(frame)
    if table.empty:
        return BatchResult(rows=0, failing_rows=0)
    rules = inference_rules(cfg)
    context = _gx_context(cfg.home)
    source = context.data_sources.add_or_update_pandas("steep_inference")
    asset = source.add_dataframe_asset("inference_batch")
    batch = asset.add_batch_definition_whole_dataframe("whole")
    suite = context.suites.add_or_update(
        gx.ExpectationSuite(name=SUITE_NAME, expectations=[copy.copy(r.expectation) for r in rules])
    )
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=SUITE_NAME, data=batch, suite=suite)
    )
    actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs")] if data_docs else []
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=SUITE_NAME,
            validation_definitions=[definition],
            actions=actions,
            result_format={"result_format": "COMPLETE"},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": table})
    (validation,) = result.run_results.values()
    by_rule = {r.name: r for r in rules}
    outcomes, failing = [], set()
    for res in validation.results:
        rule = by_rule[res.expectation_config.meta["steep_rule"]]
        if res.exception_info and res.exception_info.get("raised_exception"):
            raise RuntimeError(
                f"expectation {rule.name!r} raised: {res.exception_info.get('exception_message')}"
            )
        info = res.result or {}
        index = list(info.get("unexpected_index_list") or [])
        if not rule.row_level and not res.success:
            index = list(range(len(table)))  # a table-level failure (missing columns) fails every row
        if rule.blocking:
            failing.update(index)
        outcomes.append(RuleOutcome(rule.name, rule.blocking, bool(res.success), len(index)))
    return BatchResult(rows=len(table), failing_rows=len(failing), rules=outcomes)
