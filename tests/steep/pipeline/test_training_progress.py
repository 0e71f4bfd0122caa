"""steep.pipeline.training_progress: the time estimate in words, and what restarts cost."""

from __future__ import annotations

import queue

import pytest

from steep.pipeline.training_progress import TrainingProgress, duration, estimate_line


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0.2, "under 1 s"), (44.6, "45 s"), (250, "4 min 10 s"), (3600 * 2 + 5 * 60 + 20, "2 h 05 min")],
)
def test_durations_read_as_people_say_them(seconds, words):
    assert duration(seconds) == words


def test_the_estimate_names_the_steps_left_the_precision_and_the_device():
    event = {"step": 20, "total_steps": 96, "precision": "fp32", "estimate_s": 251.0,
             "device": "AMD EPYC 7R13 Processor, 2 threads, no native bf16"}  # fmt: skip
    assert estimate_line(event) == (
        "training: 76 steps in fp32 on AMD EPYC 7R13 Processor, 2 threads, no native bf16: about 4 min 11 s "
        "(timed on this machine before the first step)"
    )


def test_a_reclaim_is_counted_with_its_checkpoint_and_the_steps_it_costs(capsys):
    """Events as the loop sends them: a notice at step 12, checkpoints, the node goes, Ray restarts from 13;
    then a crash at step 19 restarts from the periodic checkpoint at 15."""
    events: queue.Queue = queue.Queue()
    nodes = [{"id": "a", "name": "ray-worker-1"}, {"id": "b", "name": "ray-worker-2"}]
    start = {"event": "start", "total_steps": 40, "precision": "fp32", "nodes": nodes}

    def step(n: int) -> dict:
        return {"event": "step", "step": n, "epoch": 0, "lr": 1e-3, "tokens": 10, "seconds": 0.1, "loss": 1.0,
                "time": 100.0 + n}  # fmt: skip

    sequence = [
        {**start, "step": 0}, *[step(n) for n in range(1, 13)],
        {"event": "preemption", "step": 12, "time": 112.5, "deadline": 140.0, "nodes": ["ray-worker-2"],
         "ranks": [1]},
        {"event": "checkpoint", "step": 12, "final": False, "reason": "preemption", "time": 112.75},
        step(13), {"event": "checkpoint", "step": 13, "final": False, "reason": "preemption", "time": 113.5},
        {**start, "step": 13}, *[step(n) for n in range(14, 20)],
        {**start, "step": 15}, *[step(n) for n in range(16, 41)],
    ]  # fmt: skip
    for event in sequence:
        events.put(event)
    with TrainingProgress(events, Recorder(), total_tokens=400, show=False) as bar:
        pass
    assert bar.restarts == 2 and bar.steps_redone == 0 + 4  # the reclaim cost nothing; the crash 16..19
    [reclaim] = bar.preemptions
    assert reclaim["nodes"] == ["ray-worker-2"] and reclaim["checkpoint"] - reclaim["notice"] == 0.25
    assert reclaim["checkpoint_step"] == 12 and "restart" in reclaim
    out = capsys.readouterr().out
    assert "spot reclaim notice for ray-worker-2 at step 12, 28 s before the deadline" in out
    assert "checkpoint at step 12, 0.2 s after the notice" in out
    assert "training restarts after a spot reclaim, from step 13: 0 step(s) trained again" in out
    assert "training restarts after a failure, from step 15: 4 step(s) trained again" in out


class Recorder:
    """A MetricLogger stand-in that keeps what was logged."""

    def __init__(self) -> None:
        self.logged: list[tuple[dict, int]] = []

    def log(self, values: dict, step: int) -> None:
        self.logged.append((values, step))
