"""load -> validate -> split: the splits hold only the rows that pass validation, for every caller."""

from __future__ import annotations

import pandas as pd
import pytest

from steep.config import SteepConfig
from steep.data import split_dataset
from steep.pipeline.prepare import PreparedData, ValidationFailed, prepare_splits, split_validated
from steep.validation import ValidationReport
from tests.conftest_train import toy_frame
from tests.steep.pipeline.conftest import toy_config

BAD_IDS = {f"bad{i}" for i in range(4)}


def with_bad_rows(folder, **sections):
    """60 good rows and 4 whose summary is longer than their text, each in its own group."""
    bad = pd.DataFrame(
        [
            {"id": f"bad{i}", "group": f"b{i}", "text": "alpha bravo charlie delta echo",
             "summary": "alpha bravo charlie delta echo foxtrot golf hotel"}
            for i in range(4)
        ]
    )  # fmt: skip
    pd.concat([toy_frame(60), bad]).to_json(folder / "toy.jsonl", orient="records", lines=True)
    return toy_config(folder, **sections)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> SteepConfig:
    return with_bad_rows(tmp_path_factory.mktemp("prepare"))


@pytest.fixture(scope="module")
def prepared(cfg) -> PreparedData:
    return prepare_splits(cfg)


def test_rows_validation_drops_are_in_no_split(prepared):
    report, splits = prepared.report, prepared.splits
    assert report.passed and report.rows_in == 64 and report.rows_out == 60
    assert set(report.dropped["summary shorter than text"]) == BAD_IDS
    in_splits = {row_id for _, part in splits.items() for row_id in part["id"]}
    assert len(in_splits) == 60 and not in_splits & BAD_IDS
    assert list(splits.train.columns) == ["id", "group", "text", "summary"]


def test_the_digests_are_those_of_the_validated_rows(cfg, prepared):
    """Not those of splitting the unvalidated frame (what `steep data show` printed before)."""
    validated = split_dataset(prepared.report.clean, cfg.data.split, cfg.project.seed)
    raw = split_dataset(prepared.dataset.frame, cfg.data.split, cfg.project.seed)
    assert prepared.splits.digests == validated.digests
    assert set(prepared.splits.digests.values()).isdisjoint(raw.digests.values())
    assert len(prepared.dataset.frame) == 64  # the dataset is as loaded; its digest names the file's rows


def test_data_docs_are_written_under_home(cfg, prepared):
    assert prepared.report.data_docs is not None and prepared.report.data_docs.name == "index.html"
    assert prepared.report.data_docs.is_relative_to(cfg.home)


def test_failed_validation_raises_and_splits_nothing(tmp_path):
    with pytest.raises(ValidationFailed) as failed:
        prepare_splits(with_bad_rows(tmp_path, validation={"min_rows": 10_000}))
    assert not failed.value.report.passed and failed.value.report.clean is None
    assert str(failed.value) == (
        "the training data failed validation (at least min_rows rows); see `steep validate`"
    )


def test_split_validated_refuses_a_failed_report(tmp_path):
    report = ValidationReport(passed=False, policy="drop", rows_in=3, rows_out=0, results=[])
    with pytest.raises(ValidationFailed, match="failed validation"):
        split_validated(toy_config(tmp_path), report)
