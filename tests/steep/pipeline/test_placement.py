"""steep.pipeline.placement: the budgets Ray Train gets, and what a run waiting for nodes says."""

from __future__ import annotations

import time

import pytest
from ray.train import FailureConfig

from steep.config import SteepConfig
from steep.pipeline.placement import FIRST_SAY_S, SAY_EVERY_S, PlacementWait, failure_budgets, placement_waits


def config(**training: object) -> SteepConfig:
    return SteepConfig.model_validate({"training": {"workers": 2, **training}})


@pytest.mark.parametrize(
    ("timeout", "seconds", "rounds"),
    [("10m", 600, (30.0, 19)), ("45s", 45, (30.0, 1)), ("20s", 20, (20.0, 0))],
)
def test_the_placement_timeout_becomes_rounds_of_rays_wait(timeout, seconds, rounds):
    wait, retries = placement_waits(timeout)
    assert (wait, retries) == rounds
    total = wait * (retries + 1)  # Ray gives up after the first wait and each retry's
    assert seconds <= total < seconds + wait


def test_reclaims_errors_and_placement_draw_on_budgets_of_their_own():
    budgets = failure_budgets(config(max_failures=1, max_preemptions=-1, placement_timeout="1m"))
    ray_config = FailureConfig(**budgets)  # Ray's own class takes them as they are
    assert ray_config.max_failures == 1  # a second crash fails the run...
    assert ray_config.max_preemption_failures == -1  # ...while reclaims are survived without end
    assert ray_config.controller_failure_limit == 1  # two waits of 30 s
    assert failure_budgets(config(max_preemptions=3))["max_preemption_failures"] == 3


def test_the_defaults_survive_every_reclaim_and_wait_ten_minutes():
    t = SteepConfig().training
    assert (t.max_preemptions, t.placement_timeout, t.max_failures) == (-1, "10m", 1)


def test_a_wait_for_a_lost_node_is_said_then_every_30_s_with_the_node_and_when_it_gives_up():
    cpus: dict[str, float | None] = {"n1": 1.0, "n2": None, "head": 0.0}
    wait = PlacementWait(config(placement_timeout="5m"), nodes=lambda: cpus)
    placed = [{"id": "n1", "name": "ray-worker-1"}, {"id": "n2", "name": "ray-worker-2"}]
    quiet = time.time()
    assert wait.line(placed, quiet, quiet + FIRST_SAY_S - 1) is None  # events came just now: not waiting
    line = wait.line(placed, quiet, quiet + FIRST_SAY_S)
    assert line is not None and "ray-worker-2 (lost by " in line and "ray-worker-1" not in line
    assert f"its 2 workers again since {time.strftime('%H:%M:%S', time.localtime(quiet))}" in line
    assert "1 live node(s) with CPUs now" in line  # the head offers none
    assert f"Gives up at {time.strftime('%H:%M:%S', time.localtime(quiet + 300))}" in line
    assert "training.placement_timeout=5m" in line
    assert wait.line(placed, quiet, quiet + FIRST_SAY_S + SAY_EVERY_S - 1) is None  # not again before 30 s
    assert wait.line(placed, quiet, quiet + FIRST_SAY_S + SAY_EVERY_S) is not None
    cpus["n2"] = 1.0  # a slow step, not a lost node: nothing to say
    assert wait.line(placed, quiet, quiet + 4 * SAY_EVERY_S) is None


def test_the_config_refuses_a_budget_below_unlimited():
    with pytest.raises(ValueError, match="max_preemptions"):
        config(max_preemptions=-2)
