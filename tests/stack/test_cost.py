"""The cost estimate and the budget guard."""

from __future__ import annotations

import pytest

from steep.config import StackConfig
from steep.stack import cost, prices


def test_local_is_free() -> None:
    est = cost.estimate("local", StackConfig())
    assert est.hourly == 0 and "$0.00/hour" in est.table()


@pytest.mark.parametrize("target", ["aws", "gcp", "azure"])
def test_every_default_machine_type_has_a_price(target: str) -> None:
    for machine in prices.DEFAULTS[target].values():
        assert prices.PRICES[target][machine] >= 0
    assert prices.DEFAULT_REGION[target] in prices.REGIONS[target]


def test_gpu_spot_nodes_are_priced_at_the_spot_share() -> None:
    on_demand = cost.estimate("aws", StackConfig(gpu_nodes=2, spot=False))
    spot = cost.estimate("aws", StackConfig(gpu_nodes=2, spot=True))
    g5 = prices.PRICES["aws"]["g5.xlarge"]
    assert on_demand.hourly - spot.hourly == pytest.approx(2 * g5 * (1 - prices.SPOT_FACTOR["aws"]))
    base = 0.10 + 0.045 + 0.016 + 2 * 0.192
    assert on_demand.hourly == pytest.approx(base + 2 * g5)
    assert on_demand.monthly == pytest.approx(on_demand.hourly * 730)
    assert "as of" in on_demand.table() and "g5.xlarge" in on_demand.table()


def test_budget_below_the_estimate_is_refused_with_the_fix() -> None:
    est = cost.estimate("gcp", StackConfig(gpu_nodes=1))
    cost.check_budget(est, est.hourly + 0.01)
    with pytest.raises(cost.CostError, match=r"exceeds the budget of \$0.10/hour; raise --budget"):
        cost.check_budget(est, 0.10)


def test_unknown_instance_type_lists_the_known_ones() -> None:
    with pytest.raises(cost.CostError, match=r"no price for 'x9\.huge' on aws; use one of"):
        cost.estimate("aws", StackConfig(cpu_instance_type="x9.huge"))
