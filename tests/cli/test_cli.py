"""The `steep` command as a user runs it: exit codes, one clear message, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, SHARED_DATA, legal_overrides


def steep(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "steep", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=300,
    )


def sets(pairs: list[str]) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "Traceback" not in out, out
    for fragment in fragments:
        assert fragment in out, out


def test_config_validate_ok_and_typo(tmp_path):
    assert steep("config", "validate").returncode == 0
    bad = tmp_path / "steep.yaml"
    bad.write_text("training:\n  epochs: 0\n  lerning_rate: 0.1\n")
    assert_user_error(
        steep("config", "validate", str(bad)),
        "training.epochs: must be >= 1, got 0",
        "did you mean 'learning_rate'",
    )


def test_config_show_resolves_overrides_and_env(tmp_path):
    env = {"STEEP__TRAINING__EPOCHS": "7"}
    result = steep("config", "show", "--set", "training.batch_size=4", env=env)
    assert result.returncode == 0
    assert "epochs: 7" in result.stdout and "batch_size: 4" in result.stdout


def test_config_schema_is_json_schema():
    schema = json.loads(steep("config", "schema").stdout)
    assert schema["title"] == "SteepConfig" and "training" in schema["properties"]


@pytest.mark.parametrize(
    ("pairs", "fragments"),
    [
        (["data.source=/no/such/file.jsonl"], ["no such file"]),
        (["data.text_column=body"], ["missing column", "data.text_column: 'body'"]),
        (["training.workers=-1"], ["training.workers: must be >= 0, got -1"]),
        (["training.epochs=two"], ["training.epochs", "'two'"]),
    ],
)
def test_validate_bad_input_is_exit_2(legal_jsonl, tmp_path, pairs, fragments):
    assert_user_error(steep("validate", *sets(legal_overrides(legal_jsonl, tmp_path) + pairs)), *fragments)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b"", "empty"), (b'{"id": 1,\n', "not valid JSON"), (b"\xff\xfe\x00garbage", "not UTF-8")],
)
def test_validate_garbled_files_are_exit_2(legal_jsonl, tmp_path, content, fragment):
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    result = steep("validate", *sets([*legal_overrides(legal_jsonl, tmp_path), f"data.source={path}"]))
    assert_user_error(result, fragment)


def test_validate_legal_set_reports_and_writes_docs(legal_jsonl, tmp_path):
    result = steep("validate", *sets(legal_overrides(legal_jsonl, tmp_path)))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "summary has enough words" in out and "dropped 17 bad rows" in out
    assert "duplicated summaries" in out and "validation passed" in out
    docs = out.split("Data Docs: ", 1)[1].split()[0]
    assert (tmp_path / "gx").exists() and docs.endswith("index.html")


def test_validate_fail_policy_exits_1(legal_jsonl, tmp_path):
    result = steep(
        "validate", *sets([*legal_overrides(legal_jsonl, tmp_path), "validation.on_bad_rows=fail"])
    )
    assert result.returncode == 1 and "validation failed" in result.stdout


def test_data_seed_if_present(tmp_path):
    result = steep(
        "data", "seed", str(tmp_path / "absent.json"), "--if-present", "--set", f"project.home={tmp_path}"
    )
    assert result.returncode == 0 and "nothing seeded" in result.stdout
    result = steep("data", "seed", str(SHARED_DATA / "all_v1.json"), "--set", f"project.home={tmp_path}")
    assert result.returncode == 0 and list((tmp_path / "cache" / "data").rglob("all_v1.json"))


def test_data_show_prints_the_split_digests_a_run_tags(legal_jsonl, tmp_path):
    """The splits of the rows that pass validation (it drops 17 on the legal set): the digests that register
    tags on a model version, not those of splitting the unvalidated rows."""
    from steep.config import load_config
    from steep.data import split_dataset
    from steep.pipeline.prepare import prepare_splits
    from steep.pipeline.provenance import version_tags
    from steep.registry import GateDecision

    pairs = legal_overrides(legal_jsonl, tmp_path)
    result = steep("data", "show", *sets(pairs))
    assert result.returncode == 0, result.stderr
    cfg = load_config(REPO / "steep.yaml", pairs, environ={})
    prepared = prepare_splits(cfg)
    tags = version_tags(cfg, prepared, [], GateDecision(False, "rougeL", 0.0, 0.0, "base model"))
    for name in ("train", "validation", "test"):
        assert tags[f"steep.split_digest.{name}"][:16] in result.stdout, result.stdout
    assert tags["steep.data_digest"][:16] in result.stdout
    unvalidated = split_dataset(prepared.dataset.frame, cfg.data.split, cfg.project.seed)
    assert not any(digest[:16] in result.stdout for digest in unvalidated.digests.values())
    assert "17 dropped" in result.stdout


def test_data_show_of_data_that_fails_validation(legal_jsonl, tmp_path):
    result = steep(
        "data", "show", *sets([*legal_overrides(legal_jsonl, tmp_path), "validation.min_rows=10000"])
    )
    assert_user_error(
        result, "the training data failed validation (at least min_rows rows)", "steep validate"
    )


def test_unknown_command_is_a_usage_error():
    result = steep("nonsense")
    assert result.returncode == 2 and "Traceback" not in result.stderr


# -------------------------------------------------------------------------------------------- a user's folder
def test_no_config_in_the_folder_says_steep_init(tmp_path):
    assert_user_error(steep("run", cwd=tmp_path), f"no steep.yaml in {tmp_path}", "steep init")


def test_commands_find_the_project_from_a_subfolder(tmp_path):
    (tmp_path / "steep.yaml").write_text(
        "project: {name: acme-contracts}\ndata: {source: data/clauses.csv}\n"
    )
    below = tmp_path / "notebooks" / "scratch"
    below.mkdir(parents=True)
    shown = steep("config", "show", cwd=below)
    assert shown.returncode == 0, shown.stderr
    resolved = shown.stdout
    assert (
        f"home: {tmp_path / '.steep'}" in resolved
        and f"source: {tmp_path / 'data' / 'clauses.csv'}" in resolved
    )


def test_a_relative_data_path_that_does_not_exist(tmp_path):
    (tmp_path / "steep.yaml").write_text("data: {source: data/clauses.csv, sha256: null}\n")
    (tmp_path / "sub").mkdir()
    assert_user_error(
        steep("validate", cwd=tmp_path / "sub"),
        f"{tmp_path / 'data' / 'clauses.csv'}: no such file",
        f"read from the folder of steep.yaml, {tmp_path}",
    )


def test_a_project_name_that_cannot_name_a_model(tmp_path):
    (tmp_path / "steep.yaml").write_text("project: {name: Acme_Contracts}\n")
    assert_user_error(
        steep("config", "validate", cwd=tmp_path),
        "project.name: a project name must be 3-40 characters: lowercase letters",
        "got 'Acme_Contracts'",
    )


def test_error_text_is_printed_as_written_not_as_markup(tmp_path):
    """Rich would eat `[a-z]` or `[/]` in a message as markup."""
    (tmp_path / "steep.yaml").write_text("training:\n  '[bold]epochs': 2\n")
    result = steep("config", "validate", cwd=tmp_path)
    assert result.returncode == 2 and "training.[bold]epochs: unknown key" in result.stderr, result.stderr
