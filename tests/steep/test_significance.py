"""The paired bootstrap on cases with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from steep.significance import Interval, paired_bootstrap, paired_bootstraps


def test_identical_systems_differ_by_exactly_nothing():
    scores = np.random.default_rng(1).random(64)
    iv = paired_bootstrap(scores, scores.copy())
    assert (iv.delta, iv.low, iv.high) == (0.0, 0.0, 0.0)


def test_equally_good_noisy_systems_get_an_interval_around_zero():
    """b is a shuffle of a: the same mean, different rows. Not sure either way: the interval holds 0."""
    a = np.random.default_rng(2).random(64)
    b = np.random.default_rng(3).permutation(a)
    iv = paired_bootstrap(a, b)
    assert iv.delta == pytest.approx(0.0, abs=1e-12)
    assert iv.low < -0.02 and iv.high > 0.02  # a real width, on both sides of zero


def test_a_system_better_on_every_row_has_an_interval_above_zero():
    rng = np.random.default_rng(4)
    b = rng.random(40)
    a = b + 0.001 + 0.05 * rng.random(40)  # ahead on every row, by a little
    iv = paired_bootstrap(a, b)
    assert 0 < iv.low < iv.delta < iv.high
    flipped = paired_bootstrap(b, a)
    assert flipped.high < 0 and flipped.delta == pytest.approx(-iv.delta)


def test_the_interval_of_a_mean_matches_the_normal_theory_one():
    """400 independent differences ~ N(0.1, 0.2): the 95% interval is about mean +- 1.96 sd / sqrt(n)."""
    d = np.random.default_rng(5).normal(0.1, 0.2, 400)
    iv = paired_bootstrap(d, np.zeros_like(d), resamples=4000)
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    assert iv.delta == pytest.approx(d.mean())
    assert iv.low == pytest.approx(d.mean() - half, abs=0.15 * half)
    assert iv.high == pytest.approx(d.mean() + half, abs=0.15 * half)
    narrower = paired_bootstrap(d, np.zeros_like(d), confidence=0.5)
    assert iv.low < narrower.low < narrower.high < iv.high


def test_grouping_resamples_whole_documents():
    """10 documents of 10 rows; the gain depends on the document, barely on the row. Treating the 100 rows as
    independent claims a sure gain; resampling documents sees that 10 documents cannot show it."""
    rng = np.random.default_rng(6)
    doc = np.repeat(np.arange(10), 10)
    d = 0.05 + rng.normal(0, 0.2, 10)[doc] + rng.normal(0, 0.01, 100)
    rows = paired_bootstrap(d, np.zeros(100))
    docs = paired_bootstrap(d, np.zeros(100), groups=[f"doc{g}" for g in doc])
    assert docs.units == 10 and rows.units == 100 and docs.n == rows.n == 100
    assert docs.delta == rows.delta  # the point estimate is the mean over rows either way
    assert docs.high - docs.low > 2.5 * (rows.high - rows.low)  # ~sqrt(10) wider
    assert rows.low > 0 > docs.low  # only the grouped interval admits it may be no gain at all


def test_one_row_per_group_is_the_row_bootstrap():
    rng = np.random.default_rng(7)
    a, b = rng.random(30), rng.random(30)
    assert paired_bootstrap(a, b, groups=[f"r{i:02d}" for i in range(30)]) == paired_bootstrap(a, b)


def test_uneven_groups_weigh_rows_not_groups():
    """One document of 9 rows and one of 1: the estimate is the mean over the 10 rows."""
    a = np.array([1.0] * 9 + [0.0])
    iv = paired_bootstrap(a, np.zeros(10), groups=["big"] * 9 + ["small"])
    assert iv.delta == pytest.approx(0.9) and iv.units == 2
    assert iv.low == pytest.approx(0.0) and iv.high == pytest.approx(1.0)  # only one group drawn, or both


def test_seeded_and_reproducible():
    rng = np.random.default_rng(8)
    a, b = rng.random(50), rng.random(50)
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)
    assert paired_bootstrap(a, b, seed=3) != paired_bootstrap(a, b, seed=4)


def test_metrics_share_their_resamples():
    rng = np.random.default_rng(9)
    a, b = rng.random(50), rng.random(50)
    both = paired_bootstraps({"r1": a, "rL": a, "only_a": a}, {"r1": b, "rL": b}, resamples=500)
    assert set(both) == {"r1", "rL"} and both["r1"] == both["rL"]


def test_a_single_group_gives_no_interval():
    iv = paired_bootstrap([0.5, 0.6], [0.1, 0.2], groups=["one", "one"])
    assert iv.delta == pytest.approx(0.4) and not iv.defined
    assert iv.format() == "+40.0 [no interval]"


def test_format_in_points():
    assert Interval(0.031, 0.012, 0.05, 0.95, 64, 19).format() == "+3.1 [+1.2, +5.0]"
    assert Interval(-0.022, -0.041, -0.003, 0.95, 64, 19).format(digits=2) == "-2.20 [-4.10, -0.30]"


def test_bad_input_says_what_is_wrong():
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="one group label per row"):
        paired_bootstrap([0.1, 0.2], [0.1, 0.3], groups=["a"])
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap([0.1], [0.2], confidence=95)
