"""Provision refuses what it cannot do before Terraform runs: no working copy is made."""

from __future__ import annotations

from pathlib import Path

import pytest

from steep.config import SteepConfig
from steep.stack.contract import CONTRACT, StackError
from steep.stack.provision import provision
from steep.stack.record import write_record


def test_another_target_must_be_destroyed_first(cfg: SteepConfig, stack_home: Path) -> None:
    stack_home.mkdir(parents=True)
    outputs = {k: "x" for k in CONTRACT} | {"target": "gcp", "created_at": "2026-01-01T00:00:00+00:00"}
    write_record(stack_home, outputs, None, None)
    with pytest.raises(StackError, match=r"a gcp stack is provisioned; `steep destroy` it before"):
        provision(cfg, "local")
    assert not (stack_home / "terraform").exists() and not (stack_home / "stack.lock").exists()


def test_a_declined_plan_changes_nothing(cfg: SteepConfig, stack_home: Path) -> None:
    shown: list[str] = []

    def decline(summary: str) -> bool:
        shown.append(summary)
        return False

    with pytest.raises(StackError, match="provision cancelled; nothing was changed"):
        provision(cfg, "local", confirm=decline, echo=lambda line: None)
    assert "plan: 3 to add, 0 to change, 0 to destroy" in shown[0] and "$0.00/hour" in shown[0]
    assert not (stack_home / "terraform" / "local" / "terraform.tfstate").exists()
    assert not (stack_home / "stack.json").exists()
