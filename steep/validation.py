"""Great Expectations machinery: the data context, a suite of rules run as a checkpoint, the bad-row policy.

Which rules a table is held to lives in expectations/ (the training-data and inference-batch suites); this
module runs any list of `Rule`s the same way, so both suites share one context under project.home, one
Data Docs site and one reading of GX's results.

`validate_rows` applies the bad-row policy in two passes when it is "drop": the first finds the bad rows
(and is what the report counts), the second checks that what is left still passes the table-level rules
(e.g. enough rows remain).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    import great_expectations.expectations as gxe
    from great_expectations.data_context import AbstractDataContext

SAMPLE_IDS = 5


@dataclass(frozen=True)
class Rule:
    """One expectation plus how steep treats its failures."""

    name: str
    expectation: gxe.Expectation
    row_level: bool  # failures point at rows, which `on_bad_rows: drop` can remove
    blocking: bool  # a failure fails the run (False: reported as a warning)


@dataclass(frozen=True)
class Outcome:
    """What one rule found in one checkpoint run."""

    rule: Rule
    success: bool
    result: dict[str, Any]  # GX's result: unexpected_count, element_count, observed_value, ...
    unexpected_index: list[Any]  # the table index of the rows breaking the rule


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


# --------------------------------------------------------------------------------------------- GX
def gx_context(home: Path) -> AbstractDataContext:
    """The file-backed GX context of a project (its stores and Data Docs under `home`/gx), quiet."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # read when great_expectations is imported
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(home))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def data_docs_index(home: Path) -> Path | None:
    """The Data Docs front page the checkpoints of `gx_context(home)` update, once one was written."""
    index = Path(home) / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    return index if index.exists() else None


def run_suite(
    context: AbstractDataContext,
    suite: str,
    rules: list[Rule],
    frame: pd.DataFrame,
    *,
    source: str,
    asset: str,
    data_docs: bool = True,
    run_name: str | None = None,
) -> list[Outcome]:
    """One GX checkpoint run of `rules` (as the suite `suite`) over `frame`; -> one outcome per rule.

    `source` and `asset` name the pandas data source and asset the checkpoint reads; `data_docs` updates
    the Data Docs site. An expectation that raised (rather than failed) raises RuntimeError.
    """
    import great_expectations as gx

    pandas_source = context.data_sources.add_or_update_pandas(source)  # a fresh source: no assets yet
    batch = pandas_source.add_dataframe_asset(asset).add_batch_definition_whole_dataframe("whole")
    expectation_suite = context.suites.add_or_update(
        gx.ExpectationSuite(name=suite, expectations=[copy.copy(r.expectation) for r in rules])
    )
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite, data=batch, suite=expectation_suite)
    )
    actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs")] if data_docs else []
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=suite,
            validation_definitions=[definition],
            actions=actions,
            result_format={"result_format": "COMPLETE"},
        )
    )
    run_id = gx.RunIdentifier(run_name=run_name) if run_name else None
    result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)
    (validation,) = result.run_results.values()
    by_rule = {r.name: r for r in rules}
    outcomes = []
    for res in validation.results:
        rule = by_rule[res.expectation_config.meta["steep_rule"]]
        if res.exception_info and res.exception_info.get("raised_exception"):
            raise RuntimeError(
                f"expectation {rule.name!r} raised: {res.exception_info.get('exception_message')}"
            )
        info = res.result or {}
        index = list(info.get("unexpected_index_list") or [])
        outcomes.append(Outcome(rule, bool(res.success), info, index))
    return outcomes


# --------------------------------------------------------------------------------------------- bad rows
def _rule_results(
    outcomes: list[Outcome], rules: list[Rule], frame: pd.DataFrame
) -> tuple[list[RuleResult], dict[str, list]]:
    results, bad_index = [], {}
    for out in outcomes:
        rule, info, index = out.rule, out.result, out.unexpected_index
        ids = [str(frame.loc[i, "id"]) for i in index[:SAMPLE_IDS] if i in frame.index]
        results.append(
            RuleResult(
                name=rule.name,
                success=out.success,
                blocking=rule.blocking,
                row_level=rule.row_level,
                unexpected_count=int(info.get("unexpected_count") or 0),
                element_count=int(info.get("element_count") or len(frame)),
                observed=info.get("observed_value"),
                sample_ids=ids,
            )
        )
        if rule.row_level and rule.blocking and not out.success:
            bad_index[rule.name] = index
    order = {r.name: i for i, r in enumerate(rules)}
    return sorted(results, key=lambda r: order[r.name]), bad_index


def validate_rows(
    table: pd.DataFrame,
    rules: list[Rule],
    *,
    home: Path,
    suite: str,
    policy: str,
    source: str,
    asset: str,
) -> ValidationReport:
    """Hold `table` (one row per record, ids in an `id` column) to `rules`, with the bad-row policy.

    With policy "drop" the blocking row-level failures are dropped and the rest is checked again; the
    report's `clean` frame is what is left (None when the table fails). The checkpoint updates Data Docs.
    """
    table = table.reset_index(drop=True)
    context = gx_context(home)
    run = {"source": source, "asset": asset}
    results, bad_index = _rule_results(
        run_suite(context, suite, rules, table, run_name="find-bad-rows", **run), rules, table
    )
    dropped: dict[str, list[str]] = {}
    clean = table
    if policy == "drop" and bad_index:
        seen: set[int] = set()
        for name, index in bad_index.items():
            fresh = [i for i in index if i not in seen]
            seen.update(fresh)
            dropped[name] = [str(table.loc[i, "id"]) for i in fresh]
        clean = table.drop(index=sorted(seen)).reset_index(drop=True)
        after, _ = _rule_results(
            run_suite(context, suite, rules, clean, run_name="after-drop", **run), rules, clean
        )
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
    return ValidationReport(
        passed=passed,
        policy=policy,
        rows_in=len(table),
        rows_out=len(clean),
        results=results,
        dropped=dropped,
        data_docs=data_docs_index(home),
        clean=clean if passed else None,
    )
