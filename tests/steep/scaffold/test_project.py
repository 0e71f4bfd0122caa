"""The project `steep init` writes (steep.scaffold.project): steep.yaml with its data mapping, QUESTIONs and
instruction, the .gitignore line, the project name, and nothing written when the data cannot be read."""

from __future__ import annotations

import random
import re

import pandas as pd
import pytest

from steep.config import ConfigError, SteepConfig, load_config
from steep.data import DataError
from steep.errors import SteepError
from steep.scaffold.columns import propose_columns
from steep.scaffold.project import (
    FALLBACK_NAME,
    choose_name,
    ensure_gitignore,
    instruction_for,
    project_config,
    slug,
    write_project,
)
from tests.conftest import REPO
from tests.steep.scaffold.conftest import assert_loads_to, legal_records, prose, write_jsonl, write_news_csv


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
    shipped = load_config(REPO / "steep.yaml", environ={})
    assert result.instruction.kind == "clause" and cfg.model.instruction == shipped.model.instruction
    assert cfg.data.split == SteepConfig().data.split and cfg.training.workers == 0  # the defaults
