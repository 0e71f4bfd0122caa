"""What a target costs per hour when idle and when busy, from the price table in steep/stack/prices.py.

Shown before the user confirms a provision, and compared with the budget so nobody applies a GPU pool they did
not mean to pay for. Two figures, because on a cloud target the worker pools scale to zero by themselves:

- idle: nothing runs. The control plane, the egress gateway, the database and the always-on system pool
  (MLflow, Prefect, the KubeRay operator and the Ray head) stay; KubeRay removes idle Ray workers and the
  cluster autoscaler then removes their CPU and GPU nodes.
- busy: every worker pool at its max (stack.cpu_nodes, stack.gpu_nodes), the most the autoscalers can reach.

The budget guard compares the busy figure: that is the bill the stack can run up while it exists.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from steep.config import StackConfig
from steep.errors import SteepError
from steep.stack import prices

HOURS_PER_MONTH = prices.HOURS_PER_MONTH
# Charges by the GB moved, stored or ingested: real, but no hourly figure to print.
NOT_PRICED = {
    "aws": "bucket contents, egress and NAT data, CloudWatch logs (control plane, Postgres), VPC flow logs",
    "gcp": "bucket contents, egress and NAT data, Cloud Logging beyond the free allotment",
    "azure": "blob contents, egress and load balancer data, Log Analytics ingestion (Container insights)",
}
# What scale-to-zero cannot do, and the user must know before closing the laptop.
UNATTENDED = (
    "the TTL/idle teardown (stack.ttl, stack.idle_timeout) runs in a watchdog process on this machine: "
    "while it is off or asleep, nothing destroys the stack, and it costs at least the idle figure until "
    "the watchdog runs again or `steep destroy` runs"
)


class CostError(SteepError):
    """The estimate cannot be made, or exceeds the budget."""


@dataclass(frozen=True)
class Line:
    """One priced item: how many of it stay up when idle and run when busy, at `each` USD per hour."""

    item: str
    each: float
    idle: int
    busy: int


@dataclass
class Estimate:
    target: str
    lines: list[Line] = field(default_factory=list)

    @property
    def idle_hourly(self) -> float:
        """USD per hour with nothing running: what scales to zero is at zero."""
        return sum(line.idle * line.each for line in self.lines)

    @property
    def busy_hourly(self) -> float:
        """USD per hour with every worker pool at its max."""
        return sum(line.busy * line.each for line in self.lines)

    @property
    def idle_monthly(self) -> float:
        return self.idle_hourly * HOURS_PER_MONTH

    @property
    def busy_monthly(self) -> float:
        return self.busy_hourly * HOURS_PER_MONTH

    @property
    def hourly(self) -> float:
        """The figure the budget guards: busy (the most the stack can cost per hour)."""
        return self.busy_hourly

    @property
    def monthly(self) -> float:
        return self.hourly * HOURS_PER_MONTH

    def table(self) -> str:
        """Plain-text table: price and idle/busy count of each item, the totals, what is left out."""
        if self.target == "local":
            return (
                "local target: runs on this machine, no cloud resources: $0.00/hour idle and busy, "
                "$0.00/month"
            )
        head = f"  {'item':<40} {'$/h each':>9} {'idle':>5} {'idle $/h':>9} {'busy':>5} {'busy $/h':>9}"
        rows = [head]
        for line in self.lines:
            rows.append(
                f"  {line.item:<40} {line.each:>9.4f} {'x' + str(line.idle):>5} {line.idle * line.each:>9.4f}"
                f" {'x' + str(line.busy):>5} {line.busy * line.each:>9.4f}"
            )
        total = f"  {'total $/hour':<40} {'':>9} {'':>5} {self.idle_hourly:>9.2f}"
        rows.append(f"{total} {'':>5} {self.busy_hourly:>9.2f}")
        month = f"  {f'total $/month ({HOURS_PER_MONTH} h)':<40} {'':>9} {'':>5} {self.idle_monthly:>9,.0f}"
        rows.append(f"{month} {'':>5} {self.busy_monthly:>9,.0f}")
        notes = [
            "idle: nothing runs; KubeRay removes idle Ray workers, then the cluster autoscaler removes their "
            "CPU/GPU nodes (after about 10 minutes unneeded)",
            "busy: every worker pool at its max (stack.cpu_nodes, stack.gpu_nodes); --budget is checked "
            "against busy",
            f"not priced (billed per GB): {NOT_PRICED[self.target]}",
            f"prices: {prices.SOURCE[self.target]}, as of {prices.AS_OF}",
            f"needs this machine: {UNATTENDED}",
        ]
        rows += [
            textwrap.fill(n, 108, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False)
            for n in notes
        ]
        return "\n".join(rows)


def _price(target: str, machine: str) -> float:
    try:
        return prices.PRICES[target][machine]
    except KeyError:
        known = ", ".join(sorted(prices.PRICES[target]))
        raise CostError(
            f"no price for {machine!r} on {target}; use one of {known} (stack.cpu_instance_type / "
            "stack.gpu_instance_type) or add it to steep/stack/prices.py with its source"
        ) from None


def estimate(target: str, stack: StackConfig) -> Estimate:
    """What the target's Terraform creates, priced idle and busy; the local target costs nothing."""
    est = Estimate(target)
    if target == "local":
        return est
    d = prices.DEFAULTS[target]
    cpu = stack.cpu_instance_type or d["cpu"]
    gpu = stack.gpu_instance_type or d["gpu"]
    system = prices.SYSTEM_NODES
    est.lines += [Line(item, _price(target, item), 1, 1) for item in prices.ALWAYS_ON[target]]
    est.lines.insert(-1, Line(f"postgres {d['db']}", _price(target, d["db"]), 1, 1))  # before its storage
    est.lines.append(Line(f"system node {d['system']}", _price(target, d["system"]), system, system))
    est.lines.append(Line(f"cpu worker node {cpu}", _price(target, cpu), 0, stack.cpu_nodes))
    if stack.gpu_nodes:
        factor = prices.SPOT_FACTOR[target] if stack.spot else 1.0
        kind = "spot" if stack.spot else "on-demand"
        est.lines.append(Line(f"gpu node {gpu} ({kind})", _price(target, gpu) * factor, 0, stack.gpu_nodes))
    busy_nodes = system + stack.cpu_nodes + stack.gpu_nodes
    est.lines.append(
        Line(f"node disk {prices.NODE_DISK[target]}", _price(target, "node-disk"), system, busy_nodes)
    )
    if target in prices.PER_NODE_GATEWAY:
        item, cap = prices.PER_NODE_GATEWAY[target]
        est.lines.append(Line(f"{item} (per node)", _price(target, item), system, min(busy_nodes, cap)))
    return est


def check_budget(est: Estimate, budget: float | None) -> None:
    """Refuse a busy estimate above the budget, naming both figures and the knobs that change them."""
    if budget is not None and est.hourly > budget:
        raise CostError(
            f"estimated ${est.busy_hourly:.2f}/hour busy (~${est.busy_monthly:,.0f}/month; idle "
            f"${est.idle_hourly:.2f}/hour) exceeds the budget of ${budget:.2f}/hour; raise --budget "
            "(stack.budget_usd_per_hour) or lower stack.gpu_nodes / stack.cpu_nodes, set stack.spot: true, "
            "or pick smaller instance types\n" + est.table()
        )
