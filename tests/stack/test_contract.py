"""The contract object: how clients reach the stack, how long it has left, and the outputs steep reads,
checked both ways against what every Terraform root exports."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import steep
from steep.stack.contract import OUTPUTS, Stack
from steep.stack.terraform import TARGETS, terraform_sources
from tests.terraform.hcl import load_module


def _stack(expires_at: str | None) -> Stack:
    return Stack(target="local", mlflow_tracking_uri="http://m", artifact_uri="file:///a",
                 prefect_api_url="http://p/api", ray_address="127.0.0.1:6379", serving_url="http://s",
                 created_at="2026-01-01T00:00:00+00:00", expires_at=expires_at)  # fmt: skip


def test_env_points_the_clients_at_the_stack() -> None:
    assert _stack(None).env() == {
        "MLFLOW_TRACKING_URI": "http://m",
        "PREFECT_API_URL": "http://p/api",
        "RAY_ADDRESS": "127.0.0.1:6379",
    }


def test_time_left_counts_down_to_the_ttl() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert _stack(None).time_left(now) is None
    assert _stack((now + timedelta(hours=2)).isoformat()).time_left(now) == timedelta(hours=2)
    assert _stack((now - timedelta(seconds=5)).isoformat()).time_left(now) == timedelta(seconds=-5)


# --------------------------------------------------------------------------------------------- both ways
STEEP = Path(steep.__file__).parent
CLOUDS = ("aws", "gcp", "azure")


def outputs_read() -> dict[str, set[str]]:
    """Every stack output the code reads, by file: `stack.output("name")` calls, and any subscript or
    .get() of an `outputs` mapping (what reading around the contract would look like)."""
    found: dict[str, set[str]] = {}
    for path in STEEP.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            name = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                attr, owner = node.func.attr, node.func.value
                if attr == "output" or (attr == "get" and getattr(owner, "attr", getattr(owner, "id", None))
                                        == "outputs"):  # fmt: skip
                    name = node.args[0]
            elif isinstance(node, ast.Subscript) and getattr(node.value, "attr", None) == "outputs":
                name = node.slice
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                found.setdefault(name.value, set()).add(str(path.relative_to(STEEP.parent)))
    return found


def exported(target: str) -> set[str]:
    return set(load_module(terraform_sources() / target).outputs)


def test_every_output_the_code_reads_is_in_the_contract() -> None:
    read = outputs_read()
    assert {"work_pool", "namespace", "ray_dashboard_url"} <= set(read)  # the scan sees the real reads
    unknown = {name: sorted(files) for name, files in read.items() if name not in OUTPUTS}
    assert not unknown, f"read but not in steep.stack.contract.OUTPUTS (no root exports them): {unknown}"


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_exports_every_output_steep_reads(target: str) -> None:
    missing = sorted(set(OUTPUTS) - exported(target))
    assert not missing, f"terraform/{target} does not export {missing}"


def test_the_cloud_roots_export_the_same_outputs_and_pool_labels() -> None:
    assert exported("aws") == exported("gcp") == exported("azure")
    for cloud in CLOUDS:
        text = (terraform_sources() / cloud / "main.tf").read_text()
        keys = set(re.findall(r'"([\w.\-/]*pool)"\s*=\s*"(?:cpu|gpu)"', text))
        assert keys == {"steep-pool"}, f"{cloud}: node pool label keys {keys}"


def test_output_refuses_a_name_outside_the_contract() -> None:
    stack = _stack(None)
    assert stack.output("work_pool") is None
    with pytest.raises(KeyError, match="flow_image"):
        stack.output("flow_image")
