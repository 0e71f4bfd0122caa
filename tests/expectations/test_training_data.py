"""The training-data suite run with GX on the real legal set: its real problems are dropped and reported."""

import pandas as pd
import pytest

from steep.data import load_dataset
from steep.expectations.training_data import training_rules, validate_training_data


@pytest.fixture(scope="module")
def legal_frame(legal_jsonl):
    from steep.config import load_config
    from tests.conftest import REPO, legal_overrides

    return load_dataset(
        load_config(REPO / "steep.yaml", legal_overrides(legal_jsonl, REPO / ".steep"), environ={})
    ).frame


def by_name(report):
    return {r.name: r for r in report.results}


def test_legal_set_real_problems_are_dropped_and_reported(legal_config, legal_frame):
    report = validate_training_data(legal_frame, legal_config)
    rules = by_name(report)
    assert report.passed
    short = rules["summary has enough words"]
    assert short.status == "dropped" and short.unexpected_count == 8
    assert "legalsum01" in report.dropped["summary has enough words"]  # the summary "hi."
    dupes = rules["duplicated summaries"]
    assert dupes.status == "warn" and dupes.unexpected_count > 156  # every row sharing its summary
    assert report.rows_out == report.rows_in - sum(len(v) for v in report.dropped.values())
    assert report.clean is not None and "legalsum01" not in set(report.clean["id"])
    assert report.data_docs is not None and report.data_docs.read_text().count("steep_training_data") > 0


def test_fail_policy_fails_on_bad_rows_and_keeps_nothing(legal_config, legal_frame):
    legal_config.validation.on_bad_rows = "fail"
    report = validate_training_data(legal_frame, legal_config)
    assert not report.passed and report.clean is None
    assert {"summary has enough words", "summary shorter than text"} <= {r.name for r in report.failures}


def test_dropping_below_min_rows_fails(legal_config, legal_frame):
    legal_config.validation.min_rows = 440
    report = validate_training_data(legal_frame, legal_config)
    assert not report.passed and [r.name for r in report.failures] == ["at least min_rows rows"]


def test_duplicate_fraction_threshold(legal_config, legal_frame):
    legal_config.validation.max_duplicate_summary_fraction = 0.2
    report = validate_training_data(legal_frame, legal_config)
    assert not report.passed and "duplicate summary fraction" in {r.name for r in report.failures}


@pytest.mark.parametrize("policy", ["warn", "fail"])
def test_pii_policy(legal_config, legal_frame, policy):
    frame = legal_frame.copy()
    frame.loc[1, "text"] = frame.loc[1, "text"] + " write to jane.doe@example.com for help"
    legal_config.validation.pii.emails = policy
    legal_config.validation.on_bad_rows = "drop"
    rule = by_name(validate_training_data(frame, legal_config))["no emails in text"]
    assert rule.unexpected_count == 1 and rule.sample_ids == [frame.loc[1, "id"]]
    assert rule.status == ("warn" if policy == "warn" else "dropped")


def test_nulls_blanks_and_duplicate_ids_are_row_failures(legal_config, legal_frame):
    frame = legal_frame.copy()
    frame.loc[1, "text"] = None
    frame.loc[2, "summary"] = "   \t "
    frame.loc[4, "id"] = frame.loc[3, "id"]
    report = validate_training_data(frame, legal_config)
    rules = by_name(report)
    assert rules["text not null"].unexpected_count == 1
    assert rules["summary not blank"].unexpected_count == 1
    assert rules["unique ids"].unexpected_count == 2
    assert report.passed and report.clean["id"].is_unique


def test_an_empty_table_fails_min_rows(legal_config):
    frame = pd.DataFrame({"id": [], "group": [], "text": [], "summary": []}, dtype=object)
    report = validate_training_data(frame, legal_config)
    assert not report.passed


def test_rules_follow_the_config(legal_config):
    names = {r.name for r in training_rules(legal_config.validation)}
    assert "summary shorter than text" in names and "no emails in text" in names
    legal_config.validation.summary_shorter_than_text = False
    legal_config.validation.pii.emails = "ignore"
    names = {r.name for r in training_rules(legal_config.validation)}
    assert "summary shorter than text" not in names and "no emails in text" not in names


def test_the_clean_frame_is_canonical(legal_config, legal_frame):
    """The derived length columns the rules read are not part of what gets split and trained on."""
    report = validate_training_data(legal_frame, legal_config)
    assert list(report.clean.columns) == ["id", "group", "text", "summary"]
