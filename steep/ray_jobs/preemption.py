"""Spot reclaims, as the training loop sees them: when to ask Ray, and what to do once a notice came.

A cloud announces a reclaim some seconds ahead (GCP 30 s, AWS 120 s); Ray drains the node with the
preemption reason and a deadline, and `ray.train.get_preemption_info()` tells every worker. Asking is a
collective call (rank 0 broadcasts its view), so every rank asks at the same steps: every `every` steps,
chosen once so that asking costs under 1% of the step time. From the notice on, the loop checkpoints after
every step, and once the deadline is too close for another step and its checkpoint, it waits for the node
to go: Ray restarts the run on the remaining nodes from that checkpoint, so a reclaim costs no step (a crash
costs up to `checkpoint_every_steps`). A node still there well after its deadline was not reclaimed: the
loop goes on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

POLL_SHARE = 0.01  # asking may cost at most this share of the steps between two asks...
POLL_GAP_S = 5.0  # ...unless that leaves more than this between asks (Ray itself looks every 5 s)
HOLD_MARGIN_S = 5.0  # the last checkpoint needs Ray's controller to register it (it looks every 2 s)
SETTLE_S = 10.0  # a node still here this long after its deadline was not reclaimed


def poll_every(step_s: float, poll_s: float) -> int:
    """Steps between two asks: the ask under POLL_SHARE of the steps' time, and at most POLL_GAP_S apart."""
    if step_s <= 0:
        return 1
    by_cost = math.ceil(poll_s / (POLL_SHARE * step_s))
    by_gap = math.floor(POLL_GAP_S / step_s)
    return max(1, min(by_cost, by_gap))


def hold_seconds(deadline: float | None, now: float, step_s: float) -> float:
    """How long to wait before the next step: none while one more step and its checkpoint fit before the
    deadline; else until the deadline has passed (the node goes meanwhile, and no trained step is lost)."""
    if deadline is None or deadline - now > max(HOLD_MARGIN_S, 2 * step_s):
        return 0.0
    return max(0.0, deadline + SETTLE_S - now)


@dataclass
class PreemptionWatch:
    """One attempt's view: how often to ask, and the notice once one came (then every step is due)."""

    every: int = 1
    notice: Any = None  # Ray's PreemptionInfo
    checkpointed: set[int] = field(default_factory=set)  # steps with a checkpoint already (periodic or not)

    def due(self, step: int) -> bool:
        return self.notice is not None or step % self.every == 0

    def needs_checkpoint(self, step: int) -> bool:
        """After a notice, each step not yet checkpointed."""
        return self.notice is not None and step not in self.checkpointed


def notice_event(info: Any, step: int, nodes: list[dict[str, str]], now: float) -> dict[str, Any]:
    """The driver's event for a notice: the reclaimed nodes by name (the ids of the ranks' nodes otherwise),
    the deadline, and when this rank learnt of it."""
    names = {n["id"]: n["name"] for n in nodes}
    deadline = info.deadline_ms / 1000 if info.deadline_ms else None
    return {
        "event": "preemption", "step": step, "time": now, "deadline": deadline,
        "nodes": sorted(names.get(node, node[:8]) for node in info.preempted_node_ids),
        "ranks": list(info.preempted_ranks),
    }  # fmt: skip
