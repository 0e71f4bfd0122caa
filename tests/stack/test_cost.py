"""The cost estimate (idle and busy per hour), what `steep provision` shows of it, and the budget guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from steep.config import StackConfig, SteepConfig
from steep.stack import cost, prices
from steep.stack import provision as provision_mod
from steep.stack.contract import StackError

MONTH = 730
CLOUDS = ["aws", "gcp", "azure"]


def test_local_is_free_idle_and_busy() -> None:
    est = cost.estimate("local", StackConfig(gpu_nodes=4, cpu_nodes=8))
    assert est.idle_hourly == est.busy_hourly == est.hourly == 0
    assert "$0.00/hour idle and busy" in est.table() and "$0.00/month" in est.table()


# The default config's figures, written out from the list prices (prices.py) so a changed price or a
# changed rule shows up here: what each root keeps up when idle, and what its pools reach when busy.
AWS_NODE = 0.192 + 20 * 0.10 / MONTH  # m6i.xlarge + its 20 GiB gp2 root volume
AWS_IDLE = 0.10 + 0.045 + 0.005 + 1 / MONTH + 0.016 + 20 * 0.115 / MONTH + AWS_NODE
GCP_NODE = 0.134 + 100 * 0.10 / MONTH + 0.0014  # e2-standard-4 + 100 GB pd-balanced + its Cloud NAT share
GCP_IDLE = 0.10 + 0.0105 + 10 * 0.17 / MONTH + GCP_NODE
AZURE_NODE = 0.192 + 19.71 / MONTH  # Standard_D4s_v5 + its 128 GiB P10 OS disk
AZURE_IDLE = 0.0 + 0.025 + 0.005 + 0.0207 + 32 * 0.115 / MONTH + AZURE_NODE
EXPECTED = {
    "aws": (AWS_IDLE, AWS_IDLE + 2 * AWS_NODE),
    "gcp": (GCP_IDLE, GCP_IDLE + 2 * GCP_NODE),
    "azure": (AZURE_IDLE, AZURE_IDLE + 2 * AZURE_NODE),
}


@pytest.mark.parametrize("target", CLOUDS)
def test_default_config_idle_and_busy_per_target(target: str) -> None:
    est = cost.estimate(target, StackConfig())
    idle, busy = EXPECTED[target]
    assert est.idle_hourly == pytest.approx(idle) and est.busy_hourly == pytest.approx(busy)
    assert est.idle_monthly == pytest.approx(idle * MONTH) and est.busy_monthly == pytest.approx(busy * MONTH)
    assert est.hourly == est.busy_hourly  # the budget's figure
    # the rounded figures the README quotes
    assert {"aws": (0.37, 0.75), "gcp": (0.26, 0.56), "azure": (0.27, 0.71)}[target] == (
        round(est.idle_hourly, 2),
        round(est.busy_hourly, 2),
    )


def test_readme_quotes_the_default_figures() -> None:
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    figures = {t: cost.estimate(t, StackConfig()) for t in CLOUDS}
    aws, gcp, azure = (figures[t] for t in CLOUDS)
    assert (
        f"aws ${aws.idle_hourly:.2f}/h idle, ${aws.busy_hourly:.2f}/h busy; "
        f"gcp ${gcp.idle_hourly:.2f} / ${gcp.busy_hourly:.2f}; azure ${azure.idle_hourly:.2f} / "
        f"${azure.busy_hourly:.2f}; local $0"
    ) in readme


@pytest.mark.parametrize("target", CLOUDS)
def test_idle_is_what_stays_up_whatever_the_worker_pools(target: str) -> None:
    """Scale to zero: the worker pools' size, machine type and spot setting do not change the idle figure."""
    small = cost.estimate(target, StackConfig(cpu_nodes=1, gpu_nodes=0))
    big = cost.estimate(target, StackConfig(cpu_nodes=8, gpu_nodes=4, spot=False))
    assert big.idle_hourly == pytest.approx(small.idle_hourly)
    assert big.busy_hourly > small.busy_hourly
    workers = [line for line in big.lines if line.item.startswith(("cpu worker", "gpu node"))]
    assert [line.idle for line in workers] == [0, 0] and [line.busy for line in workers] == [8, 4]
    system = next(line for line in big.lines if line.item.startswith("system node"))
    assert system.idle == system.busy == prices.SYSTEM_NODES
    disks = next(line for line in big.lines if line.item.startswith("node disk"))
    assert (disks.idle, disks.busy) == (prices.SYSTEM_NODES, prices.SYSTEM_NODES + 8 + 4)


def test_gpu_spot_nodes_are_priced_at_the_spot_share_when_busy() -> None:
    on_demand = cost.estimate("aws", StackConfig(gpu_nodes=2, spot=False))
    spot = cost.estimate("aws", StackConfig(gpu_nodes=2, spot=True))
    g5 = prices.PRICES["aws"]["g5.xlarge"]
    assert on_demand.busy_hourly - spot.busy_hourly == pytest.approx(2 * g5 * (1 - prices.SPOT_FACTOR["aws"]))
    assert on_demand.idle_hourly == pytest.approx(spot.idle_hourly) == pytest.approx(AWS_IDLE)
    assert on_demand.busy_hourly == pytest.approx(AWS_IDLE + 2 * AWS_NODE + 2 * (g5 + 20 * 0.10 / MONTH))
    assert "g5.xlarge (on-demand)" in on_demand.table() and "g5.xlarge (spot)" in spot.table()


def test_cloud_nat_is_billed_per_node_up_to_its_cap() -> None:
    est = cost.estimate("gcp", StackConfig(cpu_nodes=100))
    nat = next(line for line in est.lines if line.item.startswith("cloud-nat"))
    assert (nat.idle, nat.busy) == (1, 32)


@pytest.mark.parametrize("target", CLOUDS)
def test_table_shows_both_figures_what_is_left_out_and_what_needs_this_machine(target: str) -> None:
    est = cost.estimate(target, StackConfig(gpu_nodes=1))
    text = est.table()
    assert "idle $/h" in text and "busy $/h" in text
    total = next(line for line in text.splitlines() if "total $/hour" in line).split()
    assert total[-2:] == [f"{est.idle_hourly:.2f}", f"{est.busy_hourly:.2f}"]
    month = next(line for line in text.splitlines() if "total $/month" in line).split()
    assert month[-2:] == [f"{est.idle_monthly:,.0f}", f"{est.busy_monthly:,.0f}"]
    assert f"as of {prices.AS_OF}" in text and "not priced (billed per GB)" in text
    assert "needs this machine: the TTL/idle teardown" in " ".join(text.split())


def test_budget_checks_the_busy_figure_and_names_both() -> None:
    est = cost.estimate("gcp", StackConfig(gpu_nodes=1))
    cost.check_budget(est, est.busy_hourly + 0.01)
    between = (est.idle_hourly + est.busy_hourly) / 2  # above idle, below busy: refused
    with pytest.raises(
        cost.CostError, match=r"busy .* idle \$0\.26/hour\) exceeds the budget of \$0\."
    ) as exc:
        cost.check_budget(est, between)
    assert "raise --budget" in str(exc.value) and "busy $/h" in str(exc.value)


def test_unknown_instance_type_lists_the_known_ones() -> None:
    with pytest.raises(cost.CostError, match=r"no price for 'x9\.huge' on aws; use one of"):
        cost.estimate("aws", StackConfig(cpu_instance_type="x9.huge"))


@pytest.mark.parametrize("target", CLOUDS)
def test_every_priced_default_exists(target: str) -> None:
    for machine in prices.DEFAULTS[target].values():
        assert prices.PRICES[target][machine] > 0
    for item in (*prices.ALWAYS_ON[target], "node-disk"):
        assert prices.PRICES[target][item] >= 0
    assert prices.DEFAULT_REGION[target] in prices.REGIONS[target]


class _Plan:
    resources = ("module.platform.helm_release.ray_cluster",)

    def __str__(self) -> str:
        return "1 to add, 0 to change, 0 to destroy"


class _Run:
    """Terraform for a cloud root cannot run offline: a stand-in that plans, so the summary is shown."""

    def __init__(self, workdir: Path):
        self.workdir = workdir

    def write_vars(self, variables: dict) -> None:
        self.variables = variables

    def init(self, backend_config: dict) -> None:
        pass

    def plan(self, replace: list[str]) -> _Plan:
        return _Plan()

    def resources(self) -> list[str]:
        return []


def test_provision_shows_idle_and_busy_before_asking(
    cfg: SteepConfig, stack_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provision_mod.preflight, "check_credentials", lambda target: None)
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.setattr(provision_mod.tf, "working_copy", lambda home, target, echo: _Run(workdir))
    shown: list[str] = []

    def decline(summary: str) -> bool:
        shown.append(summary)
        return False

    with pytest.raises(StackError, match="provision cancelled"):
        provision_mod.provision(cfg, "aws", confirm=decline, echo=lambda line: None)
    text = " ".join(shown[0].split())
    idle, busy = EXPECTED["aws"]
    assert f"total $/hour {idle:.2f} {busy:.2f}" in text
    assert f"total $/month (730 h) {idle * MONTH:,.0f} {busy * MONTH:,.0f}" in text
    assert "needs this machine: the TTL/idle teardown" in text
    assert not (stack_home / "stack.json").exists()
