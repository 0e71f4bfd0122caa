"""The GX machinery on a small table of its own: rules run as a checkpoint, the bad-row policy, Data Docs.

The suites (expectations/) are tested with their data in tests/expectations/.
"""

import great_expectations.expectations as gxe
import pandas as pd

from steep.validation import Rule, data_docs_index, gx_context, run_suite, validate_rows

TABLE = pd.DataFrame({"id": [f"r{i}" for i in range(6)], "n": [1, 2, 3, 40, 50, 6]})


def rules(min_rows: int = 1) -> list[Rule]:
    found = [
        Rule("n is small", gxe.ExpectColumnValuesToBeBetween(column="n", max_value=10), True, True),
        Rule("enough rows", gxe.ExpectTableRowCountToBeBetween(min_value=min_rows), False, True),
        Rule("n is tiny", gxe.ExpectColumnValuesToBeBetween(column="n", max_value=2), True, False),
    ]
    for rule in found:
        rule.expectation.meta = {"steep_rule": rule.name, "blocking": rule.blocking}
    return found


def check(tmp_path, policy: str, min_rows: int = 1):
    return validate_rows(
        TABLE, rules(min_rows), home=tmp_path, suite="t", policy=policy, source="s", asset="a"
    )


def test_a_suite_runs_as_a_checkpoint_one_outcome_per_rule(tmp_path):
    outcomes = run_suite(gx_context(tmp_path), "t", rules(), TABLE, source="s", asset="a", data_docs=False)
    by_name = {o.rule.name: o for o in outcomes}
    assert set(by_name) == {"n is small", "enough rows", "n is tiny"}
    assert not by_name["n is small"].success and sorted(by_name["n is small"].unexpected_index) == [3, 4]
    assert by_name["enough rows"].success and by_name["enough rows"].unexpected_index == []
    assert data_docs_index(tmp_path) is None  # data_docs=False writes no site
    again = run_suite(gx_context(tmp_path), "t", rules(), TABLE.head(3), source="s", asset="a")
    assert all(o.success for o in again if o.rule.name != "n is tiny")  # the same names, run again
    assert data_docs_index(tmp_path) is not None


def test_drop_removes_the_bad_rows_and_checks_the_rest_again(tmp_path):
    report = check(tmp_path, "drop")
    assert report.passed and report.rows_in == 6 and report.rows_out == 4
    assert report.dropped == {"n is small": ["r3", "r4"]} and list(report.clean["id"]) == [
        "r0",
        "r1",
        "r2",
        "r5",
    ]
    status = {r.name: r.status for r in report.results}
    assert status == {"n is small": "dropped", "enough rows": "pass", "n is tiny": "warn"}
    assert [r.name for r in report.results] == ["n is small", "enough rows", "n is tiny"]  # the rules' order
    assert report.data_docs == data_docs_index(tmp_path) and report.data_docs.exists()


def test_dropping_below_a_table_rule_fails_and_keeps_nothing(tmp_path):
    report = check(tmp_path, "drop", min_rows=5)
    assert not report.passed and report.clean is None
    assert [r.name for r in report.failures] == ["enough rows"]


def test_fail_policy_keeps_the_bad_rows_and_fails(tmp_path):
    report = check(tmp_path, "fail")
    assert not report.passed and report.clean is None and report.dropped == {}
    (failed,) = report.failures
    assert failed.name == "n is small" and failed.unexpected_count == 2 and failed.sample_ids == ["r3", "r4"]
    assert report.summary()["failed_rules"] == ["n is small"] and report.summary()["warned_rules"] == [
        "n is tiny"
    ]
