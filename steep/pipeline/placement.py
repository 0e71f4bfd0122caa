"""Waiting for nodes: how long Ray Train may wait to place the workers, and what the run says meanwhile.

A lost node with no spare leaves Ray Train waiting for its placement group; on a cloud the autoscaler brings
a node, on a local stack the watchdog restarts the lost one. Ray waits in rounds (one placement-group wait,
then a retry on its controller-failure budget), so `training.placement_timeout` becomes rounds of 30 s, and
the driver says every 30 s which node was lost, what the run waits for, and since when.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from steep.config import SteepConfig, parse_duration

PLACEMENT_WAIT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"  # Ray Train's wait for placement, per round
PLACEMENT_WAIT_S = 30.0
FIRST_SAY_S = 10.0  # a run quiet this long since a node of it was lost says what it waits for...
SAY_EVERY_S = 30.0  # ...and again this often


def placement_waits(placement_timeout: str) -> tuple[float, int]:
    """(seconds of one round, retries after the first): together `placement_timeout`, within 30 s."""
    total = parse_duration(placement_timeout)
    wait = min(PLACEMENT_WAIT_S, total)
    return wait, max(0, math.ceil(total / wait) - 1)


def failure_budgets(cfg: SteepConfig) -> dict[str, int]:
    """Ray's FailureConfig with three budgets apart: errors, spot reclaims (-1: unlimited), and the retries
    of a wait for placement (each a controller failure to Ray)."""
    t = cfg.training
    return {
        "max_failures": t.max_failures, "max_preemption_failures": t.max_preemptions,
        "controller_failure_limit": placement_waits(t.placement_timeout)[1],
    }  # fmt: skip


def placement_message(cfg: SteepConfig) -> str:
    t = cfg.training
    return (
        f"training waited training.placement_timeout={t.placement_timeout} for nodes to place its "
        f"{t.workers} worker(s) on, and none came. Bring the lost nodes back (`steep provision` on a local "
        "stack, the node pool's size on a cloud), lower training.workers, or raise training.placement_timeout"
    )


def ray_node_cpus() -> dict[str, float | None]:
    """Every node Ray knows of: {node id: the CPUs it offers, None for a dead one}."""
    import ray

    return {n["NodeID"]: n["Resources"].get("CPU", 0.0) if n["Alive"] else None for n in ray.nodes()}


class PlacementWait:
    """The line a run waiting for placement prints, at most every 30 s; None while nothing is lost."""

    def __init__(self, cfg: SteepConfig, nodes: Callable[[], dict[str, float | None]] = ray_node_cpus):
        self.workers = cfg.training.workers
        self.timeout = cfg.training.placement_timeout
        self.timeout_s = parse_duration(self.timeout)
        self.nodes = nodes
        self.lost_at: dict[str, float] = {}  # node name -> when this driver first saw it dead
        self.said = 0.0

    def line(self, placed: list[dict[str, Any]], quiet_since: float, now: float) -> str | None:
        """`placed`: the ranks' nodes of the last (re)start; `quiet_since`: the last event from the loop."""
        if now - quiet_since < FIRST_SAY_S or now - self.said < SAY_EVERY_S or not placed:
            return None
        cpus = self.nodes()
        lost = sorted({n["name"] for n in placed if n["id"] in cpus and cpus[n["id"]] is None})
        if not lost:
            return None
        for name in lost:
            self.lost_at.setdefault(name, now)
        self.said = now
        gone = ", ".join(f"{name} (lost by {_clock(self.lost_at[name])})" for name in lost)
        live = sum(1 for c in cpus.values() if c)  # nodes alive with CPUs to offer
        return (
            f"training is waiting to place its {self.workers} workers again since {_clock(quiet_since)}: "
            f"{gone}; {live} live node(s) with CPUs now (a local stack starts lost nodes again, a cloud's "
            f"autoscaler adds one). Gives up at {_clock(quiet_since + self.timeout_s)} "
            f"(training.placement_timeout={self.timeout}); Ctrl-C ends the wait now"
        )


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))
