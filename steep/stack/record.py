"""The stack record `<project.home>/stack.json`: the outputs of the last apply, its TTL and idle timeout.

Its presence means "a stack is provisioned"; `current()` turns it into the contract, as recorded: on a cloud
the addresses are in-cluster ones (what pods are given); `port_forward.reachable` turns them into ones
this machine opens, from the record's `reach` section. What a failed apply left without a record is found
from the Terraform state (`provisioned_targets`), so destroy still sees it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steep.stack import port_forward
from steep.stack import terraform as tf
from steep.stack.contract import CONTRACT, Stack, StackError

if TYPE_CHECKING:
    from steep.config import SteepConfig


def home_of(cfg: SteepConfig | Path | str) -> Path:
    """The stack home: project.home of a config, or the folder given."""
    return (Path(cfg) if isinstance(cfg, Path | str) else cfg.home).resolve()


def stack_file(home: Path) -> Path:
    return home / "stack.json"


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def read_record(home: Path) -> dict[str, Any] | None:
    """The record as written, or None when no stack is provisioned."""
    try:
        return json.loads(stack_file(home).read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise StackError(f"{stack_file(home)} is corrupt ({exc}); run `steep destroy` to clean up") from exc


def current(cfg: SteepConfig | Path | str) -> Stack | None:
    """The provisioned stack, or None: callers use the embedded default (sqlite MLflow, ephemeral Prefect)."""
    record = read_record(home_of(cfg))
    if record is None:
        return None
    outputs = record["outputs"]
    return Stack(
        **{k: str(outputs[k]) for k in CONTRACT},
        expires_at=record.get("expires_at"),
        idle_timeout_s=record.get("idle_timeout_s"),
        outputs=outputs,
        reach=record.get("reach") or port_forward.plan(outputs),
    )


def write_record(home: Path, outputs: dict[str, Any], ttl_s: float | None, idle_s: float | None) -> None:
    """Record a finished apply (atomically); refuse outputs that miss part of the contract."""
    missing = [k for k in CONTRACT if k not in outputs]
    if missing:
        raise StackError(
            f"terraform/{outputs.get('target')} does not export {', '.join(missing)} (stack contract)"
        )
    created = datetime.fromisoformat(str(outputs["created_at"]))
    record = {
        "outputs": outputs,
        "provisioned_at": now_iso(),
        "expires_at": (datetime.now(UTC) + timedelta(seconds=ttl_s)).replace(microsecond=0).isoformat()
        if ttl_s
        else None,
        "idle_timeout_s": idle_s,
        "created_at": created.isoformat(),
        "reach": reach_section(outputs),
    }
    tmp = stack_file(home).with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(stack_file(home))


def reach_section(outputs: dict[str, Any]) -> dict[str, Any]:
    """What steep needs to reach the services from this machine: nothing more on the local target; on a
    cloud, the Service and port behind each in-cluster address and the kubeconfig context of the cluster
    (when this machine has one now; else it is looked up on first use)."""
    section = port_forward.plan(outputs)
    if section["mode"] == "port-forward":
        section["context"] = port_forward.context_for_record(outputs)
    return section


def remove_record(home: Path) -> bool:
    """Forget the stack: the record and the variables and plan of every working copy; True if one existed."""
    existed = stack_file(home).exists()
    stack_file(home).unlink(missing_ok=True)
    for target in tf.TARGETS:
        (home / "terraform" / target / tf.VARS_FILE).unlink(missing_ok=True)
        (home / "terraform" / target / tf.PLAN_FILE).unlink(missing_ok=True)
    return existed


def provisioned_targets(home: Path) -> list[str]:
    """Targets with something in their state: the recorded one, and any a failed apply left behind."""
    found = []
    record = read_record(home)
    if record:
        found.append(record["outputs"]["target"])
    for target in tf.TARGETS:
        state = home / "terraform" / target / "terraform.tfstate"
        if target not in found and state.exists():
            try:
                resources = json.loads(state.read_text()).get("resources", [])
            except ValueError:
                resources = [True]
            if resources or (home / "terraform" / target / tf.VARS_FILE).exists():
                found.append(target)
    return found
