"""The Terraform variables of terraform/<target>, from steep.yaml.

They go into an auto-loaded file in the working copy, so a later destroy sees the values the apply used.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from steep.config import SteepConfig, parse_duration
from steep.stack import daemons, prices
from steep.stack import terraform as tf
from steep.stack.contract import StackError
from steep.stack.record import home_of

# Ray's ports besides the GCS and dashboard ones: steep picks free ones and passes them to `ray start`.
RAY_INTERNAL = ("ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                "metrics-export-port", "runtime-env-agent-port", "node-manager-port", "object-manager-port",
                "min-worker-port")  # fmt: skip


def local_ports(cfg: SteepConfig) -> dict[str, int]:
    """The ports of the local target's services, as steep.yaml sets them."""
    loc = cfg.stack.local
    return {"mlflow": loc.mlflow_port, "prefect": loc.prefect_port, "ray": loc.ray_port,
            "ray_dashboard": loc.ray_dashboard_port, "serving": cfg.serving.port}  # fmt: skip


def worker_range_clear(internal: dict[str, int], others: set[int]) -> bool:
    """Ray refuses to start when one of its ports, or a service's, lies in its range of worker ports."""
    low = internal["min-worker-port"]
    inside = {p for k, p in internal.items() if k != "min-worker-port"} | others
    return low + daemons.RAY_WORKER_PORTS <= 65536 and not any(
        low <= p < low + daemons.RAY_WORKER_PORTS for p in inside
    )


def ray_internal_ports(host: str, services: set[int]) -> dict[str, int]:
    """Free ports for Ray's internal services, none of them in the worker range nor used by `services`.

    They lie below the OS's ephemeral range (`stable`): a port drawn there stays free until Ray binds it.
    """
    singles = daemons.free_ports(len(RAY_INTERNAL) - 1, host, services, stable=True)
    for _ in range(100):
        (low,) = daemons.free_ports(1, host, services | set(singles), stable=True)
        internal = dict(zip(RAY_INTERNAL, [*singles, low], strict=True))
        if worker_range_clear(internal, services):
            return internal
    raise StackError(f"no range of {daemons.RAY_WORKER_PORTS} ports for Ray's workers on {host}; retry")


def ray_worker_ports(host: str, taken: set[int], nodes: int) -> list[dict[str, int]]:
    """Free internal ports for each Ray worker node: nodes on one machine must not share an agent or a
    worker range (the dashboard agent's default port would collide)."""
    found: list[dict[str, int]] = []
    for _ in range(nodes):
        ports = ray_internal_ports(host, taken)
        taken = taken | set(ports.values()) | _worker_range(ports)
        found.append(ports)
    return found


def _ports_usable(host: str, internal: dict[str, int], others: set[int], alive: bool) -> bool:
    """Ports a previous apply chose are kept while they are complete, clear, and free (or ours, alive)."""
    return (
        set(internal) == set(RAY_INTERNAL)
        and worker_range_clear(internal, others)
        and (alive or all(daemons.port_free(host, p) for p in internal.values()))
    )


def worker_cpus(cfg: SteepConfig) -> int:
    """CPUs each local Ray worker node offers: as set, or this machine's split evenly among them."""
    loc = cfg.stack.local
    return loc.ray_worker_cpus or max(1, (os.cpu_count() or 1) // max(1, loc.ray_worker_nodes))


def _local_ray(cfg: SteepConfig, home: Path) -> dict[str, Any]:
    """The Ray part of the local variables: the head's ports and each worker node's, kept while usable."""
    host, services = cfg.stack.local.host, set(local_ports(cfg).values())
    previous = read_vars(home, "local")
    alive = daemons.running(home, ["ray", *daemons.ray_worker_names(cfg.stack.local.ray_worker_nodes)])
    internal = previous.get("ray_internal_ports") or {}
    if not _ports_usable(host, internal, services, "ray" in alive):
        internal = ray_internal_ports(host, services)
    nodes = cfg.stack.local.ray_worker_nodes
    taken = services | set(internal.values()) | _worker_range(internal)
    kept = previous.get("ray_worker_ports") or []
    workers = []
    for name, ports in zip(daemons.ray_worker_names(nodes), kept, strict=False):
        if not _ports_usable(host, ports, taken, name in alive) or taken & set(ports.values()):
            break
        workers.append(ports)
        taken |= set(ports.values()) | _worker_range(ports)
    workers += ray_worker_ports(host, taken, nodes - len(workers))
    return {
        "ray_internal_ports": internal,
        "ray_worker_ports": workers,
        "ray_worker_nodes": nodes,
        "ray_worker_cpus": worker_cpus(cfg),
    }


def _worker_range(ports: dict[str, int]) -> set[int]:
    low = ports["min-worker-port"]
    return set(range(low, low + daemons.RAY_WORKER_PORTS))


def read_vars(home: Path, target: str) -> dict[str, Any]:
    """The variables the last plan of `target` used; empty when it never got that far."""
    try:
        return json.loads((home / "terraform" / target / tf.VARS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def terraform_variables(cfg: SteepConfig, target: str, created_at: str, region: str | None) -> dict[str, Any]:
    """The variables of terraform/<target>; the local target keeps Ray's internal ports while free."""
    home = home_of(cfg)
    base: dict[str, Any] = {"stack_name": cfg.project.name, "created_at": created_at}
    if target == "local":
        return {**base, "home": str(home), "python": sys.executable, "host": cfg.stack.local.host,
                "ports": local_ports(cfg), **_local_ray(cfg, home),
                "start_timeout": int(parse_duration(cfg.stack.local.start_timeout))}  # fmt: skip
    s = cfg.stack
    d = prices.DEFAULTS[target]
    return {**base, "region": region, "cpu_nodes": s.cpu_nodes, "gpu_nodes": s.gpu_nodes, "gpu_spot": s.spot,
            "cpu_instance_type": s.cpu_instance_type or d["cpu"],
            "gpu_instance_type": s.gpu_instance_type or d["gpu"]}  # fmt: skip
