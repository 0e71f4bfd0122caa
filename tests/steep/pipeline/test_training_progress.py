"""steep.pipeline.training_progress: the time estimate printed before the first step, in words."""

from __future__ import annotations

import pytest

from steep.pipeline.training_progress import duration, estimate_line


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
