"""Checks that run before Terraform touches anything: credentials, region, ports, lock, the record."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from steep.config import SteepConfig, load_config
from steep.stack import core


def test_missing_cloud_credentials_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(core.StackError, match=r"no aws credentials found .* run `aws configure`"):
        core.check_credentials("aws", environ={}, user_home=tmp_path)
    with pytest.raises(core.StackError, match="gcloud auth application-default login"):
        core.check_credentials("gcp", environ={}, user_home=tmp_path)
    with pytest.raises(core.StackError, match="az login"):
        core.check_credentials("azure", environ={}, user_home=tmp_path)
    core.check_credentials("aws", environ={"AWS_PROFILE": "dev"}, user_home=tmp_path)
    (tmp_path / ".azure").mkdir()
    (tmp_path / ".azure" / "azureProfile.json").write_text("{}")
    core.check_credentials("azure", environ={}, user_home=tmp_path)
    core.check_credentials("local", environ={}, user_home=tmp_path)


def test_region_that_does_not_exist_gets_close_matches() -> None:
    with pytest.raises(
        core.StackError, match=r"'us-east-9' is not a region of aws \(did you mean us-east-2, us-east-1"
    ):
        core.resolve_region("aws", "us-east-9")
    assert core.resolve_region("gcp", None) == "us-central1"
    assert core.resolve_region("azure", "westeurope") == "westeurope"
    assert core.resolve_region("local", "anything") is None


def test_port_in_use_names_the_setting(cfg: SteepConfig) -> None:
    ports = core.local_ports(cfg)
    with socket.socket() as busy:
        busy.bind((cfg.stack.local.host, ports["prefect"]))
        busy.listen()
        with pytest.raises(
            core.StackError, match=r"\(prefect\) is already in use .* stack.local.prefect_port"
        ):
            core.check_ports(cfg.stack.local.host, ports, running=set())
        core.check_ports(cfg.stack.local.host, ports, running={"prefect"})  # ours already: fine


def test_two_services_on_one_port_are_refused(cfg: SteepConfig) -> None:
    ports = {**core.local_ports(cfg), "mlflow": core.local_ports(cfg)["ray"]}
    with pytest.raises(core.StackError, match="two services share a port"):
        core.check_ports(cfg.stack.local.host, ports, running=set())


def test_lock_is_exclusive_and_a_stale_one_is_explained(stack_home: Path) -> None:
    with core.locked(stack_home):
        child = subprocess.run(
            [sys.executable, "-c", f"from steep.stack import core; from pathlib import Path\n"
             f"with core.locked(Path({str(stack_home)!r})): pass"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert child.returncode != 0 and f"(pid {os.getpid()}) is working on" in child.stderr
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (stack_home / "stack.lock").write_text(str(dead.pid))
    with (
        pytest.raises(core.StackError, match=r"stale lock .* rerun with --force-unlock"),
        core.locked(stack_home),
    ):
        pass
    with core.locked(stack_home, force_unlock=True):
        assert (stack_home / "stack.lock").read_text() == str(os.getpid())
    assert not (stack_home / "stack.lock").exists()


def test_current_is_none_until_a_record_exists_then_the_contract(stack_home: Path) -> None:
    assert core.current(stack_home) is None
    stack_home.mkdir(parents=True)
    outputs = {k: f"v-{k}" for k in core.CONTRACT} | {"created_at": "2026-01-01T00:00:00+00:00", "extra": 1}
    core.write_record(stack_home, outputs, ttl_s=3600, idle_s=600)
    stack = core.current(stack_home)
    assert stack is not None and stack.mlflow_tracking_uri == "v-mlflow_tracking_uri"
    assert stack.env()["PREFECT_API_URL"] == "v-prefect_api_url"
    assert 3500 < stack.time_left().total_seconds() <= 3600
    assert stack.idle_timeout_s == 600 and stack.outputs["extra"] == 1
    assert core.provisioned_targets(stack_home) == ["v-target"]


def test_a_target_missing_a_contract_output_is_refused(stack_home: Path) -> None:
    stack_home.mkdir(parents=True)
    outputs = {k: "x" for k in core.CONTRACT if k != "ray_address"}
    with pytest.raises(core.StackError, match="does not export ray_address"):
        core.write_record(stack_home, outputs, None, None)


def test_corrupt_record_points_at_destroy(stack_home: Path) -> None:
    stack_home.mkdir(parents=True)
    core.stack_file(stack_home).write_text("{not json")
    with pytest.raises(core.StackError, match=r"corrupt .* `steep destroy`"):
        core.current(stack_home)


def test_remote_backend_needs_locking_and_is_written(tmp_path: Path) -> None:
    with pytest.raises(core.StackError, match="dynamodb_table"):
        core.write_backend(tmp_path, "aws", {"bucket": "b", "key": "k"})
    core.write_backend(tmp_path, "gcp", {"bucket": "b", "prefix": "steep"})
    assert 'backend "gcs" {}' in (tmp_path / "steep_backend.tf").read_text()
    core.write_backend(tmp_path, "gcp", {})
    assert not (tmp_path / "steep_backend.tf").exists()
    with pytest.raises(core.StackError, match="local target keeps its state"):
        core.write_backend(tmp_path, "local", {"bucket": "b"})


def test_terraform_variables_for_clouds_come_from_the_config(tmp_path: Path) -> None:
    cfg = load_config(None, [f"project.home={tmp_path}", "stack.gpu_nodes=1", "stack.spot=false"], environ={})
    tfvars = core.terraform_variables(cfg, "aws", "2026-01-01T00:00:00+00:00", "eu-west-1")
    assert tfvars["region"] == "eu-west-1" and tfvars["gpu_nodes"] == 1 and tfvars["gpu_spot"] is False
    assert tfvars["gpu_instance_type"] == "g5.xlarge" and tfvars["stack_name"] == "steep"
    local = core.terraform_variables(cfg, "local", "t", None)
    assert local["home"] == str(tmp_path.resolve()) and set(local["ray_internal_ports"]) == set(
        core.RAY_INTERNAL
    )
    assert json.dumps(local)
