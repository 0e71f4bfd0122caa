"""Hourly and monthly cost estimate of a target, from the price table in steep/stack/prices.py.

Shown before the user confirms a provision, and compared with the budget so nobody applies a GPU pool
they did not mean to pay for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from steep.config import StackConfig
from steep.errors import SteepError
from steep.stack import prices

HOURS_PER_MONTH = 730


class CostError(SteepError):
    """The estimate cannot be made, or exceeds the budget."""


@dataclass
class Estimate:
    target: str
    lines: list[tuple[str, int, float]] = field(default_factory=list)  # (item, count, usd/h each)

    @property
    def hourly(self) -> float:
        return sum(count * each for _, count, each in self.lines)

    @property
    def monthly(self) -> float:
        return self.hourly * HOURS_PER_MONTH

    def table(self) -> str:
        """Plain-text table of the estimate with the price source."""
        if self.target == "local":
            return "local target: runs on this machine, $0.00/hour"
        rows = [
            f"  {item:<34} x{count:<3} ${each:>8.4f}/h  = ${count * each:>8.4f}/h"
            for item, count, each in self.lines
        ]
        rows.append(
            f"  {'total':<34}      ${self.hourly:>8.2f}/h  ~ ${self.monthly:,.0f}/month ({HOURS_PER_MONTH} h)"
        )
        rows.append(f"  prices: {prices.SOURCE[self.target]}, as of {prices.AS_OF}")
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
    """What the target's Terraform creates, priced: control plane, NAT, database, CPU and GPU nodes."""
    est = Estimate(target)
    if target == "local":
        return est
    d = prices.DEFAULTS[target]
    cpu = stack.cpu_instance_type or d["cpu"]
    gpu = stack.gpu_instance_type or d["gpu"]
    est.lines += [
        (f"{d['control']}", 1, _price(target, d["control"])),
        (f"{d['nat']}", 1, _price(target, d["nat"])),
        (f"postgres {d['db']}", 1, _price(target, d["db"])),
        (f"cpu node {cpu}", stack.cpu_nodes, _price(target, cpu)),
    ]
    if stack.gpu_nodes:
        factor = prices.SPOT_FACTOR[target] if stack.spot else 1.0
        kind = "spot" if stack.spot else "on-demand"
        est.lines.append((f"gpu node {gpu} ({kind})", stack.gpu_nodes, _price(target, gpu) * factor))
    return est


def check_budget(est: Estimate, budget: float | None) -> None:
    """Refuse an estimate above the budget, naming both numbers and the knobs that change them."""
    if budget is not None and est.hourly > budget:
        raise CostError(
            f"estimated ${est.hourly:.2f}/hour (~${est.monthly:,.0f}/month) exceeds the budget of "
            f"${budget:.2f}/hour; raise --budget (stack.budget_usd_per_hour) or lower stack.gpu_nodes / "
            "stack.cpu_nodes, set stack.spot: true, or pick smaller instance types\n" + est.table()
        )
