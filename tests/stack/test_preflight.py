"""Checks that run before Terraform touches anything: credentials, region, ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from steep.config import SteepConfig
from steep.stack.contract import StackError
from steep.stack.preflight import check_credentials, check_ports, resolve_region
from steep.stack.variables import local_ports


def test_missing_cloud_credentials_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"no aws credentials found .* run `aws configure`"):
        check_credentials("aws", environ={}, user_home=tmp_path)
    with pytest.raises(StackError, match="gcloud auth application-default login"):
        check_credentials("gcp", environ={}, user_home=tmp_path)
    with pytest.raises(StackError, match="az login"):
        check_credentials("azure", environ={}, user_home=tmp_path)
    check_credentials("aws", environ={"AWS_PROFILE": "dev"}, user_home=tmp_path)
    (tmp_path / ".azure").mkdir()
    (tmp_path / ".azure" / "azureProfile.json").write_text("{}")
    check_credentials("azure", environ={}, user_home=tmp_path)
    check_credentials("local", environ={}, user_home=tmp_path)


def test_region_that_does_not_exist_gets_close_matches() -> None:
    with pytest.raises(
        StackError, match=r"'us-east-9' is not a region of aws \(did you mean us-east-2, us-east-1"
    ):
        resolve_region("aws", "us-east-9")
    assert resolve_region("gcp", None) == "us-central1"
    assert resolve_region("azure", "westeurope") == "westeurope"
    assert resolve_region("local", "anything") is None


def test_port_in_use_names_the_setting(cfg: SteepConfig) -> None:
    ports = local_ports(cfg)
    with socket.socket() as busy:
        busy.bind((cfg.stack.local.host, ports["prefect"]))
        busy.listen()
        with pytest.raises(StackError, match=r"\(prefect\) is already in use .* stack.local.prefect_port"):
            check_ports(cfg.stack.local.host, ports, running=set())
        check_ports(cfg.stack.local.host, ports, running={"prefect"})  # ours already: fine


def test_two_services_on_one_port_are_refused(cfg: SteepConfig) -> None:
    ports = {**local_ports(cfg), "mlflow": local_ports(cfg)["ray"]}
    with pytest.raises(StackError, match="two services share a port"):
        check_ports(cfg.stack.local.host, ports, running=set())
