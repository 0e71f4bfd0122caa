"""Spot reclaims on the local stack, done as a cloud does them: a notice with a deadline, then the node goes.

A cloud announces a reclaim ahead (GCP 30 s, AWS 2 min); on a cluster that notice becomes Ray's drain of the
node with the reason PREEMPTION and a deadline (`ray drain-node`, the call Ray's autoscaler makes), which Ray
Train's workers see through `ray.train.get_preemption_info()`. `preempt` sends that drain request to the
local stack's Ray head, waits out the deadline, then takes the node away as a lost machine goes (every
process killed at once, its pid file kept); the stack's watchdog starts it again, as an autoscaler replaces
a reclaimed machine. `lose` takes a node away with no notice at all: a crash, for the contrast.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from steep.stack import daemons, lifecycle
from steep.stack.contract import StackError
from steep.stack.record import current

PREEMPTION = "DRAIN_NODE_REASON_PREEMPTION"  # Ray's DrainNodeReason for a spot reclaim
Echo = Callable[[str], object]


@dataclass(frozen=True)
class Drill:
    node: str  # the service name, e.g. ray-worker-2
    node_id: str  # Ray's id of it
    noticed_at: float  # when the drain was accepted (epoch seconds)
    deadline: float  # when the node goes
    gone_at: float | None = None


def drain_command(gcs_address: str, node_id: str, node: str, grace_s: int) -> list[str]:
    """`ray drain-node` as a cloud's notice becomes it: reason PREEMPTION, the deadline `grace_s` away."""
    return [
        daemons.bin_path("ray"), "drain-node", "--address", gcs_address, "--node-id", node_id,
        "--reason", PREEMPTION, "--reason-message", f"steep drill: spot reclaim of {node} in {grace_s} s",
        "--deadline-remaining-seconds", str(grace_s),
    ]  # fmt: skip


def choose(home: Path, node: str | None) -> tuple[str, str, str]:
    """(the node to take, its Ray id, the head's address): `node`, or the last (by name) live worker node
    that runs a Ray Train worker. Refused on a stack with fewer than 2 worker nodes: a run needs one left."""
    stack = current(home)
    if stack is None or stack.target != "local":
        raise StackError("the drill needs a provisioned local stack: `steep provision` (stack.target: local)")
    import ray
    from ray.util.state import list_actors

    with _connected(stack.ray_address):
        labelled = ((n["Labels"].get(daemons.NODE_LABEL, ""), n) for n in ray.nodes() if n["Alive"])
        nodes = {name: n["NodeID"] for name, n in labelled if daemons.is_ray_worker(name)}
        if len(nodes) < 2:
            raise StackError(
                f"the stack has {len(nodes)} live Ray worker node(s); the drill takes one away and a run "
                "needs one left: provision with stack.local.ray_worker_nodes >= 2"
            )
        if node is None:
            wanted = [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]
            actors = list_actors(address=stack.ray_address, filters=wanted)
            busy = sorted(name for name, node_id in nodes.items() if node_id in {a.node_id for a in actors})
            if not busy:
                raise StackError(
                    f"no training worker runs on a worker node now; name one: --node {max(nodes)}"
                )
            node = busy[-1]
    if node not in nodes:
        raise StackError(f"no live Ray worker node {node!r}; the stack has {', '.join(sorted(nodes))}")
    return node, nodes[node], stack.ray_address


def preempt(home: Path, node: str | None, grace_s: int, echo: Echo = print) -> Drill:
    """Drain `node` (default: one that runs a training worker) for preemption, wait out `grace_s`, then take
    it away as a reclaimed machine goes."""
    node, node_id, address = choose(home, node)
    drain = subprocess.run(drain_command(address, node_id, node, grace_s), capture_output=True, text=True)
    if drain.returncode != 0:
        raise StackError(f"Ray refused to drain {node}: {(drain.stderr or drain.stdout).strip()[-500:]}")
    noticed = time.time()
    deadline = noticed + grace_s
    echo(f"{node} is being reclaimed (Ray node {node_id[:12]}): preemption notice sent, it goes at "
         f"{time.strftime('%H:%M:%S', time.localtime(deadline))}, in {grace_s} s")  # fmt: skip
    time.sleep(max(0.0, deadline - time.time()))
    return Drill(node, node_id, noticed, deadline, _take_away(home, node, echo))


def lose(home: Path, node: str | None, echo: Echo = print) -> Drill:
    """Take `node` away at once, with no notice (a crash, a machine lost without warning)."""
    node, node_id, _ = choose(home, node)
    now = time.time()
    return Drill(node, node_id, now, now, _take_away(home, node, echo))


def _take_away(home: Path, node: str, echo: Echo) -> float:
    svc = daemons.recorded(home, node)
    if svc is None:
        raise StackError(f"{node} has no pid file under {home / 'run'}: it is not a node of this stack")
    killed = daemons.lose(svc)
    back = (
        "the stack's watchdog starts it again"
        if lifecycle.watchdog_pid(home) is not None
        else "`steep provision` starts it again"
    )
    echo(f"{node} is gone ({killed} processes killed, as a reclaimed machine goes); {back}")
    return time.time()


@contextlib.contextmanager
def _connected(address: str):
    """A short driver connection to the stack's Ray, quiet, for the node table and the state API."""
    import ray

    ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()
