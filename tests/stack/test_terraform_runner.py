"""The offline Terraform plumbing: provider mirror, CLI config, working copy, plan summary, error mapping."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from steep.stack import terraform as tf


def test_mirror_is_laid_out_from_the_installed_provider(tmp_path: Path) -> None:
    rc = tf.prepare_mirror(tmp_path)
    binary, version = tf.null_provider_binary()
    laid = tmp_path / "mirror" / "registry.terraform.io" / "hashicorp" / "null" / version / "linux_amd64"
    copied = laid / binary.name
    assert copied.stat().st_size == binary.stat().st_size
    assert os.access(copied, os.X_OK)
    text = rc.read_text()
    assert f'path    = "{tmp_path / "mirror"}"' in text
    assert "filesystem_mirror" in text and "disable_checkpoint = true" in text
    assert tf.prepare_mirror(tmp_path) == rc  # second call reuses the copy


def test_sync_copies_sources_and_drops_deleted_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "local").mkdir(parents=True)
    (src / "local" / "main.tf").write_text("# main\n")
    (src / "local" / "extra.tf").write_text("# extra\n")
    (src / "modules" / "platform").mkdir(parents=True)
    (src / "modules" / "platform" / "main.tf").write_text("# platform\n")
    dest = tmp_path / "home"
    workdir = tf.sync_sources("local", dest, src)
    assert (workdir / "extra.tf").exists() and (dest / "modules" / "platform" / "main.tf").exists()
    (workdir / "terraform.tfstate").write_text("{}")
    (src / "local" / "extra.tf").unlink()
    tf.sync_sources("local", dest, src)
    assert not (workdir / "extra.tf").exists()
    assert (workdir / "terraform.tfstate").exists(), "state must survive a re-sync"


def test_unknown_target_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(
        tf.TerraformError, match="unknown target 'mars'; choose one of: local, aws, gcp, azure"
    ):
        tf.sync_sources("mars", tmp_path)


def test_real_init_and_plan_of_the_local_target_offline(tmp_path: Path) -> None:
    home = tmp_path / ".steep"
    rc = tf.prepare_mirror(home / "terraform")
    run = tf.Runner(tf.sync_sources("local", home / "terraform"), rc)
    run.write_vars({"home": str(home), "python": sys.executable, "created_at": "2026-01-01T00:00:00+00:00"})
    run.init()
    lock = (run.workdir / ".terraform.lock.hcl").read_text()
    assert 'provider "registry.terraform.io/hashicorp/null"' in lock
    plan = run.plan()
    assert (plan.add, plan.change, plan.destroy) == (3, 0, 0)
    assert sorted(plan.resources) == [
        f'create null_resource.service["{s}"]' for s in ("mlflow", "prefect", "ray")
    ]
    assert run.resources() == []


def test_a_variable_validation_failure_is_reported(tmp_path: Path) -> None:
    home = tmp_path / ".steep"
    rc = tf.prepare_mirror(home / "terraform")
    run = tf.Runner(tf.sync_sources("local", home / "terraform"), rc)
    run.write_vars({"home": "relative/path", "python": sys.executable, "created_at": "x"})
    run.init()
    with pytest.raises(tf.TerraformError, match="home must be an absolute path"):
        run.plan()


def test_summarize_counts_actions() -> None:
    plan = {
        "resource_changes": [
            {"address": "a.x", "change": {"actions": ["create"]}},
            {"address": "a.y", "change": {"actions": ["delete", "create"]}},
            {"address": "a.z", "change": {"actions": ["update"]}},
            {"address": "a.w", "change": {"actions": ["no-op"]}},
        ]
    }
    s = tf.summarize(plan)
    assert (s.add, s.change, s.destroy) == (2, 1, 1)
    assert str(s) == "2 to add, 1 to change, 1 to destroy"


def test_stale_state_lock_names_the_fix() -> None:
    stderr = (
        "Error: Error acquiring the state lock\n\nLock Info:\n"
        "  ID:        6c1d1b0e-2c3a-4f6e-9d7b-1a2b3c4d5e6f\n"
        "  Path:      s3://bucket/steep.tfstate\n"
    )
    err = tf.explain("terraform apply", stderr, Path("/h/.steep/terraform/aws"))
    assert isinstance(err, tf.StaleLockError)
    assert (
        "cd /h/.steep/terraform/aws && terraform force-unlock -force 6c1d1b0e-2c3a-4f6e-9d7b-1a2b3c4d5e6f"
        in str(err)
    )


def test_flags_never_let_python_terraform_add_a_var_file() -> None:
    flags = tf._flags({"detailed_exitcode": True, "input": False, "replace": ["a.b"]})
    assert flags["var"] is None and flags["input"] is False and flags["replace"] == ["a.b"]
    assert json.dumps(sorted(flags))  # plain keys only
