"""bench/loss_parity.py's judgement: moving averages and the relative gaps it holds to its tolerance."""

from __future__ import annotations

import math

import pytest

from bench import loss_parity as parity


def test_moving_average_is_a_trailing_mean():
    assert parity.moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]


def test_same_curve_has_no_gap_and_a_shifted_one_is_outside_the_tolerance():
    curve = [3.0 - 1.5 * (1 - math.exp(-i / 60)) + 0.4 * math.sin(i) for i in range(200)]
    same = parity.compare(curve, list(curve))
    assert same["max_smoothed_gap"] == 0 and same["final_gap"] == 0 and same["steps"] == 200
    noisy = [v + (0.05 if i % 2 else -0.05) for i, v in enumerate(curve)]  # step noise averages out
    assert parity.compare(noisy, curve)["max_smoothed_gap"] < parity.MAX_GAP
    worse = [v * 1.05 for v in curve]  # a 5% higher loss throughout
    gaps = parity.compare(worse, curve)
    assert gaps["max_smoothed_gap"] == pytest.approx(0.05) and gaps["final_gap"] > parity.MAX_FINAL_GAP


def test_short_runs_compare_over_what_there_is():
    assert parity.compare([2.0, 1.0], [2.0, 1.5, 9.0])["steps"] == 2
