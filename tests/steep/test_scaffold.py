"""`steep init` core: column proposals from names and contents, the generated steep.yaml, the files."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pydantic import BaseModel

from steep.config import ConfigError, DataConfig, SteepConfig, anchor_paths, load_config
from steep.data import DataError, to_canonical
from steep.errors import SteepError
from steep.scaffold import (
    FALLBACK_NAME,
    choose_name,
    ensure_gitignore,
    instruction_for,
    model_paths,
    project_config,
    propose_columns,
    read_data,
    render_config,
    slug,
    write_project,
)

WORDS = [
    *["the", "agreement", "party", "shall", "notify", "court", "company", "contract", "term", "service"],
    *["user", "data", "may", "not", "use", "any", "law", "right", "notice", "breach", "account", "privacy"],
    *["license", "content", "provide", "terminate"],
]


def prose(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def legal_records(n: int = 24, seed: int = 0) -> list[dict]:
    """Like the upstream legal set: uid, doc (several clauses each), original_text, reference_summary."""
    rng = random.Random(seed)
    return [
        {
            "uid": f"legalsum{i:02d}",
            "doc": f"Terms of Service {i // 4}",
            "original_text": prose(rng, 60, 120),
            "reference_summary": prose(rng, 6, 14),
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_news_csv(path: Path, n: int = 40, outlets: int = 4, seed: int = 1) -> Path:
    """Other names than the legal set: article_id (unique), source (outlet, repeated), article, highlights."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["article_id", "source", "url", "article", "highlights"])
        writer.writeheader()
        for i in range(n):
            writer.writerow(
                {
                    "article_id": f"a{i:03d}",
                    "source": f"outlet{i % outlets}",
                    "url": f"https://news.example/{i}",
                    "article": prose(rng, 80, 140),
                    "highlights": prose(rng, 8, 15),
                }
            )
    return path


def assert_loads_to(path: Path, expected: SteepConfig) -> None:
    """load_config gives exactly `expected`, with relative paths anchored at the file's folder as it does."""
    cfg = load_config(path, environ={})
    assert cfg.model_dump() == anchor_paths(expected, path.parent).model_dump()
    assert cfg.root == path.parent


def mapping(frame: pd.DataFrame) -> dict[str, str | None]:
    return propose_columns(frame).settings()


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """The proposal must be a mapping steep's own loader accepts."""
    settings = {k.removeprefix("data."): v for k, v in mapping(frame).items()}
    return to_canonical(frame, DataConfig(sha256=None, **settings), "test")


# --------------------------------------------------------------------------------------------- proposals
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


# --------------------------------------------------------------------------------------------- rendering
def test_rendered_defaults_load_back_to_exactly_the_defaults(tmp_path):
    text = render_config()
    assert yaml.safe_load(text) == SteepConfig().model_dump(mode="json")  # every key, nothing else
    path = tmp_path / "steep.yaml"
    path.write_text(text, encoding="utf-8")
    assert_loads_to(path, SteepConfig())


def _described(model: type[BaseModel] = SteepConfig) -> list[str]:
    out = []
    for info in model.model_fields.values():
        annotation, description = info.annotation, info.description
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += _described(annotation)
        elif description:
            out.append(description)
    return out


def test_every_field_description_is_a_comment():
    text = render_config()
    comments = " ".join(line.split("# ", 1)[1] for line in text.splitlines() if "# " in line)
    missing = [d for d in _described() if " ".join(d.split()) not in comments]
    assert missing == []
    assert re.search(r"^  name: steep +# names the stack, runs and models$", text, re.M)
    assert re.search(r"^  method: lora +# lora \| prompt_tuning \| full$", text, re.M)
    assert all(len(line) <= 110 for line in text.splitlines())
    head = text.split("\n\n", 1)[0]
    assert "steep config show" in head and "steep validate" in head and "steep run" in head


def test_values_are_put_in_and_load_back(tmp_path):
    values = {
        "project.name": "legal-bot",
        "data.source": "data/x: y.csv",
        "data.sha256": None,
        "data.group_column": None,
        "training.lora.target_modules": ["q_proj", "v_proj"],
        "drift.schedule": "*/5 * * * *",
        "model.instruction": "yes",
    }
    path = tmp_path / "steep.yaml"
    path.write_text(render_config(values), encoding="utf-8")
    expected = SteepConfig().model_dump(mode="json")
    for dotted, value in values.items():
        node = expected
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    assert_loads_to(path, SteepConfig.model_validate(expected))
    assert load_config(path, environ={}).data.source == str(tmp_path / "data" / "x: y.csv")
    assert "target_modules: [q_proj, v_proj]" in path.read_text()


def test_render_rejects_keys_the_model_does_not_have():
    with pytest.raises(ValueError, match=r"data\.text_col"):
        render_config({"data.text_col": "x"})
    assert "training.lora.r" in model_paths() and "data.split" not in model_paths()


def test_open_question_is_commented_above_a_null_key_that_stops_load(tmp_path):
    rng = random.Random(9)
    frame = pd.DataFrame(
        {"body": [prose(rng, 60, 80) for _ in range(30)], "content": [prose(rng, 60, 80) for _ in range(30)]}
    )
    text = project_config("legal-bot", "d.csv", propose_columns(frame))
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  text_column:"))
    assert lines[at].split("#")[0].strip() == "text_column: null"
    assert (
        lines[at - 1] == "  # QUESTION: which column holds the texts to summarize? candidates: body, content"
    )
    path = tmp_path / "steep.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"data\.text_column: not set: name the column"):
        load_config(path, environ={})
    path.write_text(
        text.replace("text_column: null", "text_column: body", 1).replace(
            "summary_column: null", "summary_column: content", 1
        ),
        encoding="utf-8",
    )
    assert load_config(path, environ={}).data.text_column == "body"


def test_an_open_text_question_leaves_the_generic_instruction_and_says_why():
    rng = random.Random(13)
    frame = pd.DataFrame(
        {
            "body": [prose(rng, 60, 80) for _ in range(30)],
            "content": [prose(rng, 60, 80) for _ in range(30)],
            "summary": [prose(rng, 6, 10) for _ in range(30)],
        }
    )
    proposal = propose_columns(frame)
    instruction = instruction_for(frame, proposal)
    assert instruction.instruction == SteepConfig().model.instruction and "open QUESTION" in instruction.why
    text = project_config("legal-bot", "d.csv", proposal, instruction)
    assert f"  # {instruction.why}\n  instruction: {instruction.instruction}\n" in text


def test_without_data_the_default_source_is_kept_and_pointed_at(tmp_path):
    text = project_config("legal-bot", None, None)
    path = tmp_path / "steep.yaml"
    path.write_text(text, encoding="utf-8")
    assert_loads_to(path, SteepConfig(project={"name": "legal-bot"}))
    above_source = text.split("\ndata:\n", 1)[1].split("  source: https://", 1)[0]
    assert "Point data.source at your data" in above_source and "--data" in above_source


# --------------------------------------------------------------------------------------------- project
def test_init_refuses_to_overwrite_without_force(tmp_path):
    (tmp_path / "steep.yaml").write_text("project: {name: mine}\n", encoding="utf-8")
    with pytest.raises(SteepError) as err:
        write_project(tmp_path)
    assert str(tmp_path / "steep.yaml") in str(err.value) and "--force" in str(err.value)
    assert err.value.exit_code == 2
    assert (tmp_path / "steep.yaml").read_text() == "project: {name: mine}\n"
    write_project(tmp_path, force=True)
    assert (tmp_path / "steep.yaml").read_text().startswith("# steep.yaml")


def test_init_writes_steep_yaml_and_gitignore_only_into_a_new_folder(tmp_path):
    data = write_news_csv(tmp_path / "news.csv")
    project = tmp_path / "Legal Bot" / "v2"
    result = write_project(project, data=data)
    assert sorted(p.name for p in project.iterdir()) == [".gitignore", "steep.yaml"]
    assert (project / ".gitignore").read_text() == ".steep/\n" and result.gitignore == "created"
    cfg = load_config(project / "steep.yaml", environ={})
    assert cfg.data.source == str(data.resolve()) and cfg.data.sha256 is None and cfg.data.format == "auto"
    assert cfg.data.text_column == "article" and cfg.data.group_column == "source"
    assert cfg.project.name == result.name == FALLBACK_NAME  # 'v2' is too short for a name


def test_gitignore_line_added_once(tmp_path):
    (tmp_path / ".gitignore").write_text("*.pyc", encoding="utf-8")  # no trailing newline
    assert ensure_gitignore(tmp_path) == "added"
    assert (tmp_path / ".gitignore").read_text() == "*.pyc\n.steep/\n"
    assert ensure_gitignore(tmp_path) == "unchanged"
    (tmp_path / ".gitignore").write_text("/.steep\n", encoding="utf-8")
    assert ensure_gitignore(tmp_path) == "unchanged"


def test_data_inside_the_project_is_written_relative(tmp_path):
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "legal.jsonl", legal_records())
    write_project(tmp_path, data=tmp_path / "data" / "legal.jsonl", name="legal-bot")
    text = (tmp_path / "steep.yaml").read_text()
    assert re.search(r"^  source: data/legal.jsonl +#", text, re.M)
    assert "relative to this file's folder" in text
    assert load_config(tmp_path / "steep.yaml", environ={}).data.source == str(
        tmp_path / "data" / "legal.jsonl"
    )


def test_project_name_from_folder_fallback_and_checked_override(tmp_path):
    assert slug("My Légal_Summaries 2024") == "my-legal-summaries-2024"
    assert choose_name(tmp_path / "My Legal Bot", None) == ("my-legal-bot", None)
    name, note = choose_name(tmp_path / "42", None)
    assert name == FALLBACK_NAME and "'42'" in note and "--name" in note
    assert choose_name(tmp_path, "legal-bot") == ("legal-bot", None)
    with pytest.raises(ConfigError, match="a project name must be 3-40 characters: lowercase letters") as err:
        choose_name(tmp_path, "Legal_Bot")
    assert "--name 'Legal_Bot'" in str(err.value) and err.value.exit_code == 2


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("missing.jsonl", None, "no such file"),
        ("bad.jsonl", b'{"id": 1,\n', "line 1 is not valid JSON"),
        ("data.txt", b"hello\n", "cannot tell the format"),
        ("latin.csv", b"text\n\xe9t\xe9\n", "not UTF-8"),
    ],
)
def test_unreadable_data_is_the_readers_error_and_nothing_is_written(tmp_path, name, content, fragment):
    data = tmp_path / name
    if content is not None:
        data.write_bytes(content)
    project = tmp_path / "proj"
    with pytest.raises(DataError, match=fragment):
        write_project(project, data=data)
    assert not project.exists()


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


# --------------------------------------------------------------------------------------------- document keys
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


def test_the_legal_set_as_csv_proposes_case_ref_and_the_clause_instruction(tmp_path, legal_jsonl):
    """The case from issue 24: note_id, case_ref (59 document titles over 446 rows), body, abstract."""
    names = {"id": "note_id", "doc": "case_ref", "source_text": "body", "summary": "abstract"}
    path = tmp_path / "legal.csv"
    pd.read_json(legal_jsonl, lines=True).rename(columns=names).to_csv(path, index=False)
    result = write_project(tmp_path / "proj", data=path)
    proposal = result.proposal
    assert proposal.settings() == {
        "data.id_column": "note_id",
        "data.text_column": "body",
        "data.summary_column": "abstract",
        "data.group_column": "case_ref",
    }
    assert (
        "reads as a reference and its values repeat: 59 distinct over 446 rows" in proposal.role("group").why
    )
    cfg = load_config(result.config, environ={})
    shipped = load_config(Path(__file__).resolve().parents[2] / "steep.yaml", environ={})
    assert result.instruction.kind == "clause" and cfg.model.instruction == shipped.model.instruction
    assert cfg.data.split == SteepConfig().data.split and cfg.training.workers == 0  # the defaults
