"""`steep init` as a user runs it: the proposed mapping, the questions, the next steps, exit codes 0 and 2."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from steep.cli import app, main  # the package import registers every command, init included
from steep.config import load_config
from steep.errors import SteepError
from tests.steep.scaffold.conftest import prose, write_news_csv
from tests.steep.test_instruction import CLAUSES, DIALOGUES, NEWS

runner = CliRunner()


def flat(text: str) -> str:
    """The output with rich's line wrapping (80 columns under the runner) undone."""
    return " ".join(text.split())


def test_init_with_a_csv_prints_the_mapping_table_and_next_steps(tmp_path):
    data = write_news_csv(tmp_path / "news.csv")
    project = tmp_path / "news-bot"
    result = runner.invoke(app, ["init", str(project), "--data", str(data)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "column mapping proposed" in out and "why" in out
    for key, column in [
        ("data.id_column", "article_id"),
        ("data.text_column", "article"),
        ("data.summary_column", "highlights"),
        ("data.group_column", "source"),
    ]:
        row = next(line for line in out.splitlines() if key in line)
        assert f" {column} " in row, row
    assert "QUESTION" not in out and "question" not in out
    assert f"cd {project}" in flat(out) and "steep validate" in out and "steep run" in out
    assert "validation.min_rows is 50" in flat(out)  # 40 rows: say so now rather than at `steep validate`
    cfg = load_config(project / "steep.yaml", environ={})
    assert (cfg.project.name, cfg.data.text_column, cfg.data.summary_column) == (
        "news-bot",
        "article",
        "highlights",
    )
    assert (project / ".gitignore").read_text() == ".steep/\n"


def test_init_asks_instead_of_guessing_and_says_what_to_answer(tmp_path):
    rng = random.Random(0)
    data = tmp_path / "two.jsonl"
    pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(60)],
            "body": [prose(rng, 60, 80) for _ in range(60)],
            "content": [prose(rng, 60, 80) for _ in range(60)],
            "summary": [prose(rng, 6, 10) for _ in range(60)],
        }
    ).to_json(data, orient="records", lines=True)
    result = runner.invoke(app, ["init", str(tmp_path / "proj"), "--data", str(data)])
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert "answer 1 question(s) in steep.yaml before `steep run`" in out
    assert "data.text_column: which column holds the texts to summarize? candidates: body, content" in out
    assert "# QUESTION: which column holds the texts" in (tmp_path / "proj" / "steep.yaml").read_text()


def test_init_defaults_to_the_current_folder_without_data(tmp_path, monkeypatch):
    project = tmp_path / "Legal Bot"
    project.mkdir()
    monkeypatch.chdir(project)
    result = runner.invoke(app, ["init", "--name", "contracts-v2"])
    assert result.exit_code == 0, result.output
    assert "point it at your data" in flat(result.output) and "cd " not in result.output
    assert sorted(p.name for p in project.iterdir()) == [".gitignore", "steep.yaml"]
    cfg = load_config(project / "steep.yaml", environ={})
    assert cfg.project.name == "contracts-v2" and cfg.data.text_column == "original_text"


def test_init_refuses_an_existing_config_unless_forced(tmp_path):
    (tmp_path / "steep.yaml").write_text("project: {name: mine}\n", encoding="utf-8")
    result = runner.invoke(app, ["init", str(tmp_path)])
    assert isinstance(result.exception, SteepError) and result.exception.exit_code == 2
    assert "--force" in str(result.exception)
    assert (tmp_path / "steep.yaml").read_text() == "project: {name: mine}\n"
    result = runner.invoke(app, ["init", str(tmp_path), "--force"])
    assert result.exit_code == 0, result.output
    assert load_config(tmp_path / "steep.yaml", environ={}).project.name != "mine"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--force-not"], "No such option"),
        (["--name", "Bad_Name"], "--name 'Bad_Name': a project name must be"),
        (["--data", "missing.csv"], "missing.csv: no such file"),
        (["--data", "bad.jsonl"], "line 1 is not valid JSON"),
    ],
)
def test_user_errors_exit_2_with_one_message(tmp_path, monkeypatch, capsys, args, fragment):
    """Through the console-script entry point, like a user: exit 2, the message, no traceback."""
    (tmp_path / "bad.jsonl").write_text('{"id": 1,\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["steep", "init", "proj", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert fragment in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "proj").exists()


def test_existing_config_exits_2_naming_the_file_and_force(tmp_path, monkeypatch, capsys):
    (tmp_path / "steep.yaml").write_text("{}\n", encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["steep", "init", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = " ".join(capsys.readouterr().err.split())
    assert exit_.value.code == 2
    assert f"error: {tmp_path / 'steep.yaml'} already exists; pass --force to overwrite it" in err


def write_table(path: Path, frame: pd.DataFrame) -> Path:
    """A data file as users bring them: CSV (DialogSum's turns on lines of one field), JSONL or Parquet."""
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    return path


def test_init_proposes_an_instruction_for_dialogues_news_and_clauses_and_the_best_defaults(tmp_path):
    """Three kinds of data, three instructions, each with its why; the split and workers the shipped config
    found best. A dialogue set is never told to summarize a contract clause."""
    dialogues = pd.DataFrame(
        {
            "fname": [f"train_{i}" for i in range(len(DIALOGUES))],
            "dialogue": [text for text, _ in DIALOGUES],
            "summary": [summary for _, summary in DIALOGUES],
            "topic": ["daily life"] * len(DIALOGUES),
        }
    )
    news = pd.DataFrame({"article": [t for t, _ in NEWS], "highlights": [s for _, s in NEWS]})
    clauses = pd.DataFrame(
        {
            "clause_id": [f"c{i}" for i in range(len(CLAUSES))],
            "clause": [t for t, _ in CLAUSES],
            "plain_summary": [s for _, s in CLAUSES],
        }
    )
    cases = [
        ("dialogue", write_table(tmp_path / "dialogsum.csv", dialogues)),
        ("news article", write_table(tmp_path / "news.jsonl", news)),
        ("contract clause", write_table(tmp_path / "clauses.parquet", clauses)),
    ]
    written = {}
    for kind, data in cases:
        project = tmp_path / f"{data.stem}-bot"
        result = runner.invoke(app, ["init", str(project), "--data", str(data)])
        assert result.exit_code == 0, result.output
        text = (project / "steep.yaml").read_text()
        cfg = load_config(project / "steep.yaml", environ={})
        assert cfg.data.text_column in {"dialogue", "article", "clause"}
        written[kind] = cfg.model.instruction
        assert kind in cfg.model.instruction
        assert "model.instruction" in result.output and kind in " ".join(result.output.split())  # shown too
        above = text.split("\n  task_prefix:", 1)[1].split("\n  instruction: ", 1)[0]  # the comment over it
        assert "# the texts read as " in above and "6 of 6 rows have " in above, above
        assert cfg.data.split.validation == 0.15 and cfg.training.workers == 0
        assert re.search(r"^    validation: 0\.15 ", text, re.M) and re.search(r"^  workers: 0$", text, re.M)
    assert written == {
        "dialogue": "Summarize this dialogue in one sentence.",
        "news article": "Summarize this news article in a few sentences.",
        "contract clause": "Summarize this contract clause in one plain-English sentence.",
    }
