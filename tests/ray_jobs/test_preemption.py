"""steep.ray_jobs.preemption: how often the loop asks Ray for a reclaim notice, and what it does after one."""

from __future__ import annotations

from ray.train import PreemptionInfo

from steep.ray_jobs.preemption import (
    POLL_GAP_S,
    POLL_SHARE,
    SETTLE_S,
    PreemptionWatch,
    hold_seconds,
    notice_event,
    poll_every,
)


def test_asking_costs_under_one_percent_of_the_steps_between_asks():
    for step_s, poll_s in [(6.0, 0.02), (0.5, 0.01), (0.05, 0.0004), (1.2, 0.003)]:
        every = poll_every(step_s, poll_s)
        assert poll_s <= POLL_SHARE * step_s * every, (step_s, poll_s, every)
        assert every == 1 or poll_s > POLL_SHARE * step_s * (every - 1)  # and no rarer than that


def test_a_notice_is_never_missed_for_long_even_when_asking_is_dear():
    """A slow ask against fast steps: more than 1%, but at most 5 s between asks (a notice is 30 s ahead)."""
    every = poll_every(step_s=0.01, poll_s=0.05)
    assert every * 0.01 <= POLL_GAP_S and every == 500
    assert poll_every(step_s=30.0, poll_s=1.0) == 1  # steps longer than the gap: every step
    assert poll_every(step_s=0.0, poll_s=0.01) == 1  # nothing timed (no steps left): ask each step


def test_after_a_notice_every_step_is_due_and_checkpointed_once():
    watch = PreemptionWatch(every=10)
    assert [s for s in range(1, 31) if watch.due(s)] == [10, 20, 30]
    assert not watch.needs_checkpoint(10)  # no notice: the schedule's checkpoints only
    watch.notice = PreemptionInfo(deadline_ms=1_000_000, preempted_node_to_ranks={"ab" * 14: [1]})
    assert all(watch.due(s) for s in range(31, 40))
    watch.checkpointed.add(31)  # a periodic checkpoint fell on this step already
    assert not watch.needs_checkpoint(31) and watch.needs_checkpoint(32)


def test_the_notice_names_the_nodes_the_driver_knows_and_its_deadline():
    node = "1f" * 14
    info = PreemptionInfo(deadline_ms=1_700_000_030_000, preempted_node_to_ranks={node: [1], "9a" * 14: [2]})
    nodes = [{"id": "00" * 14, "name": "ray-worker-1"}, {"id": node, "name": "ray-worker-2"}]
    event = notice_event(info, step=42, nodes=nodes, now=1_700_000_001.5)
    assert event == {
        "event": "preemption", "step": 42, "time": 1_700_000_001.5, "deadline": 1_700_000_030.0,
        "nodes": ["9a9a9a9a", "ray-worker-2"], "ranks": [1, 2],
    }  # fmt: skip
    no_deadline = PreemptionInfo(deadline_ms=None, preempted_node_to_ranks={node: [1]})
    assert notice_event(no_deadline, 1, nodes, 0.0)["deadline"] is None


def test_close_to_the_deadline_the_loop_waits_for_the_node_to_go_instead_of_training_on():
    deadline = 1000.0
    assert hold_seconds(None, 990.0, 0.5) == 0.0  # no deadline given: train on, checkpointing each step
    assert hold_seconds(deadline, 990.0, 0.5) == 0.0  # 10 s left: room for more steps
    assert hold_seconds(deadline, 996.0, 0.5) == 4.0 + SETTLE_S  # 4 s left: wait past the deadline
    assert hold_seconds(deadline, 990.0, 6.0) == 10.0 + SETTLE_S  # a 6 s step would not fit twice
    assert hold_seconds(deadline, deadline + SETTLE_S + 1, 0.5) == 0.0  # never reclaimed: go on
