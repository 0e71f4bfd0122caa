"""The stack record: written after an apply, read as the contract, found again after a failed apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steep.stack import terraform as tf
from steep.stack.contract import CONTRACT, StackError
from steep.stack.record import current, provisioned_targets, remove_record, stack_file, write_record


def test_current_is_none_until_a_record_exists_then_the_contract(stack_home: Path) -> None:
    assert current(stack_home) is None
    stack_home.mkdir(parents=True)
    outputs = {k: f"v-{k}" for k in CONTRACT} | {"created_at": "2026-01-01T00:00:00+00:00", "extra": 1}
    write_record(stack_home, outputs, ttl_s=3600, idle_s=600)
    stack = current(stack_home)
    assert stack is not None and stack.mlflow_tracking_uri == "v-mlflow_tracking_uri"
    assert stack.env()["PREFECT_API_URL"] == "v-prefect_api_url"
    assert 3500 < stack.time_left().total_seconds() <= 3600
    assert stack.idle_timeout_s == 600 and stack.outputs["extra"] == 1
    assert provisioned_targets(stack_home) == ["v-target"]


def test_a_target_missing_a_contract_output_is_refused(stack_home: Path) -> None:
    stack_home.mkdir(parents=True)
    outputs = {k: "x" for k in CONTRACT if k != "ray_address"}
    with pytest.raises(StackError, match="does not export ray_address"):
        write_record(stack_home, outputs, None, None)


def test_corrupt_record_points_at_destroy(stack_home: Path) -> None:
    stack_home.mkdir(parents=True)
    stack_file(stack_home).write_text("{not json")
    with pytest.raises(StackError, match=r"corrupt .* `steep destroy`"):
        current(stack_home)


def test_state_left_by_a_failed_apply_counts_as_provisioned(stack_home: Path) -> None:
    workdir = stack_home / "terraform" / "gcp"
    workdir.mkdir(parents=True)
    (workdir / "terraform.tfstate").write_text(json.dumps({"resources": []}))
    assert provisioned_targets(stack_home) == []  # an empty state of a plan that never ran: nothing
    (workdir / "terraform.tfstate").write_text(json.dumps({"resources": [{"type": "google_sql_database"}]}))
    assert provisioned_targets(stack_home) == ["gcp"]
    (workdir / "terraform.tfstate").write_text("{torn")
    assert provisioned_targets(stack_home) == ["gcp"]  # unreadable state: assume something is there


def test_remove_record_forgets_the_stack_and_its_variables(stack_home: Path) -> None:
    workdir = stack_home / "terraform" / "local"
    workdir.mkdir(parents=True)
    (workdir / tf.VARS_FILE).write_text("{}")
    (workdir / tf.PLAN_FILE).write_text("plan")
    write_record(stack_home, {k: "x" for k in CONTRACT} | {"created_at": "2026-01-01T00:00:00"}, None, None)
    assert remove_record(stack_home) is True
    assert current(stack_home) is None and not (workdir / tf.VARS_FILE).exists()
    assert not (workdir / tf.PLAN_FILE).exists()
    assert remove_record(stack_home) is False
