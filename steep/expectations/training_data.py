"""The Great Expectations suite for training data, built from the `validation` section, and its run.

Run on the canonical table (id, group, text, summary) plus derived length columns, so every rule is a stock GX
expectation that shows up by name in Data Docs. Row-level rules can drop their bad rows
(policy `on_bad_rows`); table-level rules always decide the run. The GX machinery is steep.validation's.
"""

from __future__ import annotations

import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.expectations.metadata_types import FailureSeverity

from steep.config import SteepConfig, ValidationConfig
from steep.data import CANONICAL_COLUMNS
from steep.pii import EMAIL, PHONE
from steep.validation import Rule, ValidationReport, validate_rows

SUITE_NAME = "steep_training_data"


def with_lengths(frame: pd.DataFrame) -> pd.DataFrame:
    """The canonical table plus the derived columns the length rules look at."""
    text = frame["text"].fillna("")
    summary = frame["summary"].fillna("")
    return frame.assign(
        text_chars=text.str.len(),
        summary_chars=summary.str.len(),
        summary_words=summary.str.split().str.len().fillna(0).astype(int),
    )


def training_rules(v: ValidationConfig) -> list[Rule]:
    """The rules of the training-data suite, thresholds from config."""

    def severity(blocking: bool) -> FailureSeverity:
        return FailureSeverity.CRITICAL if blocking else FailureSeverity.WARNING

    rules = [
        Rule(
            "columns present",
            gxe.ExpectTableColumnsToMatchSet(
                column_set=["id", "group", "text", "summary"], exact_match=False
            ),
            False,
            True,
        ),
        Rule("at least min_rows rows", gxe.ExpectTableRowCountToBeBetween(min_value=v.min_rows), False, True),
        Rule("unique ids", gxe.ExpectColumnValuesToBeUnique(column="id"), True, True),
        Rule("text not null", gxe.ExpectColumnValuesToNotBeNull(column="text"), True, True),
        Rule("summary not null", gxe.ExpectColumnValuesToNotBeNull(column="summary"), True, True),
        Rule("text not blank", gxe.ExpectColumnValuesToMatchRegex(column="text", regex=r"\S"), True, True),
        Rule(
            "summary not blank", gxe.ExpectColumnValuesToMatchRegex(column="summary", regex=r"\S"), True, True
        ),
        Rule(
            "text length in bounds",
            gxe.ExpectColumnValuesToBeBetween(
                column="text_chars", min_value=v.text_min_chars, max_value=v.text_max_chars
            ),
            True,
            True,
        ),
        Rule(
            "summary has enough words",
            gxe.ExpectColumnValuesToBeBetween(column="summary_words", min_value=v.summary_min_words),
            True,
            True,
        ),
        Rule(
            "summary length in bounds",
            gxe.ExpectColumnValuesToBeBetween(column="summary_chars", max_value=v.summary_max_chars),
            True,
            True,
        ),
        Rule(
            "duplicated summaries",
            gxe.ExpectColumnValuesToBeUnique(column="summary", severity=severity(False)),
            True,
            False,
        ),
        Rule(
            "duplicate summary fraction",
            gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
                column="summary", min_value=1.0 - v.max_duplicate_summary_fraction
            ),
            False,
            True,
        ),
    ]
    if v.summary_shorter_than_text:
        rules.append(
            Rule(
                "summary shorter than text",
                gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="text_chars", column_B="summary_chars"),
                True,
                True,
            )
        )
    for name, regex, policy in (
        ("emails", EMAIL, v.pii.emails),
        ("phone numbers", PHONE, v.pii.phone_numbers),
    ):
        if policy == "ignore":
            continue
        for column in ("text", "summary"):
            rules.append(
                Rule(
                    f"no {name} in {column}",
                    gxe.ExpectColumnValuesToNotMatchRegex(
                        column=column, regex=regex, severity=severity(policy == "fail")
                    ),
                    True,
                    policy == "fail",
                )
            )
    for rule in rules:
        rule.expectation.meta = {"steep_rule": rule.name, "blocking": rule.blocking}
    return rules


def validate_training_data(frame: pd.DataFrame, cfg: SteepConfig) -> ValidationReport:
    """Hold a canonical table to the training-data suite; Data Docs under project.home.

    With `on_bad_rows: drop` the report's `clean` frame (canonical columns) lacks the bad rows; it is None
    when the data fails.
    """
    report = validate_rows(
        with_lengths(frame.reset_index(drop=True)),
        training_rules(cfg.validation),
        home=cfg.home,
        suite=SUITE_NAME,
        policy=cfg.validation.on_bad_rows,
        source="steep",
        asset="training_data",
    )
    if report.clean is not None:
        report.clean = report.clean[CANONICAL_COLUMNS]
    return report
