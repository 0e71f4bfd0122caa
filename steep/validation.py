"""Run the training-data suite with Great Expectations, apply the bad-row policy, write Data Docs.

Two passes when `on_bad_rows: drop`: the first finds the bad rows (and is what the report counts), the second
checks that what is left still passes the table-level rules (e.g. enough rows remain).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from expectations.training_data import SUITE_NAME, Rule, training_rules, with_lengths
from steep.config import SteepConfig

SAMPLE_IDS = 5


@dataclass(frozen=True)
class RuleResult:
    name: str
    success: bool
    blocking: bool
    row_level: bool
    unexpected_count: int
    element_count: int
    observed: Any
    sample_ids: list[str]
    dropped: int = 0

    @property
    def status(self) -> str:
        if self.success:
            return "dropped" if self.dropped else "pass"
        return "fail" if self.blocking else "warn"


@dataclass
class ValidationReport:
    passed: bool
    policy: str
    rows_in: int
    rows_out: int
    results: list[RuleResult]
    dropped: dict[str, list[str]] = field(default_factory=dict)  # rule name -> ids dropped for it
    data_docs: Path | None = None
    clean: pd.DataFrame | None = None

    @property
    def failures(self) -> list[RuleResult]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def warnings(self) -> list[RuleResult]:
        return [r for r in self.results if r.status == "warn"]

    def summary(self) -> dict[str, Any]:
        """A flat dict for MLflow tags and the model version."""
        return {
            "passed": self.passed,
            "policy": self.policy,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped": sum(len(v) for v in self.dropped.values()),
            "failed_rules": [r.name for r in self.failures],
            "warned_rules": [r.name for r in self.warnings],
        }


def _gx_context(home: Path):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(home))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _run_suite(context, rules: list[Rule], frame: pd.DataFrame, run_name: str):
    """One GX checkpoint run over `frame`; returns the validation result and the Data Docs index path."""
    import great_expectations as gx

    source = context.data_sources.add_or_update_pandas("steep")
    try:
        asset = source.get_asset("training_data")
    except LookupError:
        asset = source.add_dataframe_asset("training_data")
    try:
        batch = asset.get_batch_definition("whole")
    except KeyError:
        batch = asset.add_batch_definition_whole_dataframe("whole")
    suite = context.suites.add_or_update(
        gx.ExpectationSuite(name=SUITE_NAME, expectations=[copy.copy(r.expectation) for r in rules])
    )
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=SUITE_NAME, data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=SUITE_NAME,
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            result_format={"result_format": "COMPLETE"},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=gx.RunIdentifier(run_name=run_name))
    (validation,) = result.run_results.values()
    return validation


def _rule_results(
    validation, rules: list[Rule], frame: pd.DataFrame
) -> tuple[list[RuleResult], dict[str, list]]:
    by_rule = {r.expectation.meta["steep_rule"]: r for r in rules}
    results, bad_index = [], {}
    for res in validation.results:
        rule = by_rule[res.expectation_config.meta["steep_rule"]]
        info = res.result or {}
        index = list(info.get("unexpected_index_list") or [])
        if res.exception_info and res.exception_info.get("raised_exception"):
            raise RuntimeError(
                f"expectation {rule.name!r} raised: {res.exception_info.get('exception_message')}"
            )
        ids = [str(frame.loc[i, "id"]) for i in index[:SAMPLE_IDS] if i in frame.index]
        results.append(
            RuleResult(
                name=rule.name,
                success=bool(res.success),
                blocking=rule.blocking,
                row_level=rule.row_level,
                unexpected_count=int(info.get("unexpected_count") or 0),
                element_count=int(info.get("element_count") or len(frame)),
                observed=info.get("observed_value"),
                sample_ids=ids,
            )
        )
        if rule.row_level and rule.blocking and not res.success:
            bad_index[rule.name] = index
    order = {r.name: i for i, r in enumerate(rules)}
    return sorted(results, key=lambda r: order[r.name]), bad_index


def validate_frame(frame: pd.DataFrame, cfg: SteepConfig) -> ValidationReport:
    """Validate a canonical table; with `on_bad_rows: drop` the report's `clean` frame lacks the bad rows."""
    v = cfg.validation
    rules = training_rules(v)
    context = _gx_context(cfg.home)
    table = with_lengths(frame.reset_index(drop=True))
    validation = _run_suite(context, rules, table, "find-bad-rows")
    results, bad_index = _rule_results(validation, rules, table)
    rows_in = len(table)
    dropped: dict[str, list[str]] = {}
    clean = table
    if v.on_bad_rows == "drop" and bad_index:
        seen: set[int] = set()
        for name, index in bad_index.items():
            fresh = [i for i in index if i not in seen]
            seen.update(fresh)
            dropped[name] = [str(table.loc[i, "id"]) for i in fresh]
        clean = table.drop(index=sorted(seen)).reset_index(drop=True)
        second = _run_suite(context, rules, clean, "after-drop")
        after, _ = _rule_results(second, rules, clean)
        # keep what the first pass found on rows; take the verdicts from what is left after dropping
        results = [
            replace(
                first,
                success=then.success,
                observed=first.observed if first.row_level else then.observed,
                dropped=len(dropped.get(first.name, [])),
            )
            for first, then in zip(results, after, strict=True)
        ]
    passed = all(r.success or not r.blocking for r in results)
    docs = Path(cfg.home) / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    return ValidationReport(
        passed=passed,
        policy=v.on_bad_rows,
        rows_in=rows_in,
        rows_out=len(clean),
        results=results,
        dropped=dropped,
        data_docs=docs if docs.exists() else None,
        clean=clean[["id", "group", "text", "summary"]] if passed else None,
    )
