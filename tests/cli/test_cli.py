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


def test_unknown_command_is_a_usage_error():
    result = steep("nonsense")
    assert result.returncode == 2 and "Traceback" not in result.stderr
