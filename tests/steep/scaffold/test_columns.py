"""`steep init`'s column proposal (steep.scaffold.columns): each role from names and contents, a QUESTION
where the evidence is not clear, and a mapping steep's own loader accepts."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from steep.config import DataConfig, load_config
from steep.data import DataError, to_canonical
from steep.scaffold.columns import propose_columns
from steep.scaffold.project import project_config, read_data
from tests.steep.scaffold.conftest import legal_records, prose, write_jsonl, write_news_csv


def mapping(frame: pd.DataFrame) -> dict[str, str | None]:
    return propose_columns(frame).settings()


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """The proposal must be a mapping steep's own loader accepts."""
    settings = {k.removeprefix("data."): v for k, v in mapping(frame).items()}
    return to_canonical(frame, DataConfig(sha256=None, **settings), "test")


def test_legal_jsonl_maps_uid_doc_original_text_reference_summary(tmp_path):
    frame = read_data(write_jsonl(tmp_path / "legal.jsonl", legal_records()))
    proposal = propose_columns(frame)
    assert proposal.settings() == {
        "data.id_column": "uid",
        "data.text_column": "original_text",
        "data.summary_column": "reference_summary",
        "data.group_column": "doc",
    }
    assert proposal.questions == []
    assert "6 distinct values" in proposal.role("group").why
    out = canonical(frame)
    assert out["group"].nunique() == 6 and out["id"].is_unique


def test_csv_with_news_names_maps_article_id_article_highlights_source(tmp_path):
    frame = read_data(write_news_csv(tmp_path / "news.csv"))
    proposal = propose_columns(frame)
    assert proposal.settings() == {
        "data.id_column": "article_id",  # url is unique too, but not an id by name
        "data.text_column": "article",
        "data.summary_column": "highlights",
        "data.group_column": "source",
    }
    assert "summary" in proposal.role("text").why and proposal.questions == []
    assert len(canonical(frame)) == 40


def test_parquet_dialogues_without_a_group(tmp_path):
    rng = random.Random(2)
    path = tmp_path / "dialogues.parquet"
    pd.DataFrame(
        {
            "id": range(30),
            "dialogue": [prose(rng, 40, 80) for _ in range(30)],
            "summary": [prose(rng, 5, 10) for _ in range(30)],
        }
    ).to_parquet(path)
    proposal = propose_columns(read_data(path))
    assert proposal.settings() == {
        "data.id_column": "id",
        "data.text_column": "dialogue",
        "data.summary_column": "summary",
        "data.group_column": None,
    }
    # no grouping column is not a question: null (split by row) is the right answer
    assert proposal.questions == [] and "null" in proposal.role("group").why


def test_object_of_records_uses_its_keys_as_ids(tmp_path):
    records = {r["uid"]: {k: v for k, v in r.items() if k != "uid"} for r in legal_records()}
    path = tmp_path / "all.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    frame = read_data(path)
    proposal = propose_columns(frame)
    assert proposal.role("id").column is None and "keys" in proposal.role("id").why
    assert proposal.role("text").column == "original_text" and proposal.questions == []
    assert list(canonical(frame)["id"][:2]) == ["legalsum00", "legalsum01"]


def test_two_equally_long_text_columns_are_a_question_not_a_guess():
    rng = random.Random(3)
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(30)],
            "body": [prose(rng, 60, 80) for _ in range(30)],
            "content": [prose(rng, 60, 80) for _ in range(30)],
            "summary": [prose(rng, 6, 10) for _ in range(30)],
        }
    )
    proposal = propose_columns(frame)
    text = proposal.role("text")
    assert text.column is None and text.required
    assert text.candidates == ("body", "content")
    assert proposal.role("summary").column == "summary"
    assert [q.key for q in proposal.questions] == ["data.text_column"]


def test_unnamed_columns_of_similar_length_ask_both_roles():
    rng = random.Random(4)
    frame = pd.DataFrame(
        {"x": [prose(rng, 50, 70) for _ in range(30)], "y": [prose(rng, 50, 70) for _ in range(30)]}
    )
    proposal = propose_columns(frame)
    assert {q.key for q in proposal.questions} == {"data.text_column", "data.summary_column"}
    assert proposal.role("text").column is None and proposal.role("summary").column is None


def test_unnamed_columns_told_apart_by_length():
    rng = random.Random(5)
    frame = pd.DataFrame(
        {"x": [prose(rng, 8, 12) for _ in range(30)], "y": [prose(rng, 60, 90) for _ in range(30)]}
    )
    proposal = propose_columns(frame)
    assert (proposal.role("text").column, proposal.role("summary").column) == ("y", "x")


def test_no_summary_like_column_is_a_question():
    rng = random.Random(6)
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(30)],
            "text": [prose(rng, 40, 60) for _ in range(30)],
            "label": ["a", "b", "c"] * 10,
        }
    )
    proposal = propose_columns(frame)
    summary = proposal.role("summary")
    assert proposal.role("text").column == "text"
    assert summary.column is None and summary.required and summary.candidates == ()
    assert "none found" in summary.question_line()


def test_names_contradicted_by_lengths_are_a_question():
    rng = random.Random(7)
    frame = pd.DataFrame(
        {"text": [prose(rng, 5, 8) for _ in range(30)], "summary": [prose(rng, 60, 80) for _ in range(30)]}
    )
    proposal = propose_columns(frame)
    assert proposal.role("text").column is None and proposal.role("summary").column is None
    assert "not shorter" in proposal.role("text").why


def test_group_needs_a_value_per_split_and_ids_must_be_unique():
    rng = random.Random(8)
    frame = pd.DataFrame(
        {
            "id": [f"d{i // 2}" for i in range(30)],  # repeats: not an id
            "source": ["cnn", "bbc"] * 15,  # 2 values cannot fill train, validation and test
            "article": [prose(rng, 60, 80) for _ in range(30)],
            "highlights": [prose(rng, 6, 10) for _ in range(30)],
        }
    )
    proposal = propose_columns(frame)
    assert proposal.role("id").column is None and "repeat" in proposal.role("id").why
    assert proposal.role("group").column is None and "only 2 values" in proposal.role("group").why


def test_two_unique_id_columns_leave_id_null_with_an_optional_question(tmp_path):
    records = [{"id": f"x{i}", **r} for i, r in enumerate(legal_records())]
    proposal = propose_columns(pd.DataFrame(records))
    ident = proposal.role("id")
    assert ident.column is None and ident.question and not ident.required
    assert set(ident.candidates) == {"id", "uid"}
    path = tmp_path / "steep.yaml"
    path.write_text(project_config("legal-bot", "legal.jsonl", proposal), encoding="utf-8")
    assert load_config(path, environ={}).data.id_column is None  # an open optional question still loads


def test_empty_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no rows"):
        propose_columns(read_data(write_jsonl(tmp_path / "e.jsonl", [])))


def test_id_and_group_found_by_contents_when_names_do_not_say():
    """`clause_ref` is unique and short (an id); `agreement` repeats short values (a document key)."""
    rng = random.Random(3)
    frame = pd.DataFrame(
        {
            "n": list(range(40)),
            "agreement": [f"agreement {i // 4}" for i in range(40)],
            "clause_text": [prose(rng, 40, 60) for _ in range(40)],
            "plain_summary": [prose(rng, 5, 8) for _ in range(40)],
        }
    )
    proposal = propose_columns(frame)
    assert proposal.role("id").column == "n" and "unique" in proposal.role("id").why
    assert (
        proposal.role("group").column == "agreement" and "10 distinct over 40" in proposal.role("group").why
    )
    both = frame.assign(batch=[f"b{i % 5}" for i in range(40)])  # two repeated-value columns: ask
    group = propose_columns(both).role("group")
    assert group.column is None and set(group.candidates) == {"agreement", "batch"}


def clauses_frame(rng: random.Random, key: str, values: list[str]) -> pd.DataFrame:
    """40 clauses and summaries with a row id and one more column, `key`, holding `values`."""
    return pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(40)],
            key: values,
            "text": [prose(rng, 40, 60) for _ in range(40)],
            "summary": [prose(rng, 5, 8) for _ in range(40)],
        }
    )


@pytest.mark.parametrize("key", ["case_ref", "policy_id", "contract_key"])
def test_an_id_like_name_whose_values_repeat_is_a_reference_proposed_as_the_group(key):
    frame = clauses_frame(random.Random(10), key, [f"K-{i // 5}" for i in range(40)])
    proposal = propose_columns(frame)
    group = proposal.role("group")
    assert (proposal.role("id").column, group.column) == ("id", key)
    assert group.why.startswith(
        f"name {key!r} reads as a reference and its values repeat: 8 distinct over 40"
    )
    assert canonical(frame)["group"].nunique() == 8


def test_several_references_are_a_question_and_outrank_a_column_found_by_contents():
    frame = clauses_frame(random.Random(11), "case_ref", [f"C-{i // 5}" for i in range(40)])
    frame = frame.assign(policy_id=[f"P-{i // 4}" for i in range(40)], batch=[f"b{i % 5}" for i in range(40)])
    group = propose_columns(frame).role("group")
    assert group.column is None and group.question and not group.required
    assert group.candidates == ("case_ref", "policy_id")  # batch repeats too, but only by contents
    assert "several id-like columns whose values repeat" in group.why


def test_repeated_values_set_aside_are_named_in_the_why_never_no_repeated_column():
    """A repeating row id is broken, free text that repeats is no key, 2 values cannot fill 3 splits."""
    rng = random.Random(12)
    boilerplate = [prose(rng, 30, 40) for _ in range(10)]
    frame = clauses_frame(rng, "record_id", [f"r{i // 2}" for i in range(40)]).assign(
        notes=[boilerplate[i % 10] for i in range(40)], lang=["en", "de"] * 20, score=[0.5, 1.5] * 20
    )
    proposal = propose_columns(frame)
    group = proposal.role("group")
    assert group.column is None and group.question is None
    assert "repeats but names the row" in group.why and "'record_id'" in group.why
    assert "'notes' is free text" in group.why
    assert "'lang' has only 2 values, a split needs 3" in group.why
    assert "'score' holds measurements" in group.why
    assert "no other column repeats" not in group.why
    only_unique = clauses_frame(rng, "n", list(range(40)))
    assert "no other column repeats values" in propose_columns(only_unique).role("group").why
