"""Paired bootstrap intervals: how sure a difference between two systems scored on the same rows is.

Two models scored on the same test rows differ row by row; the mean of those differences is the point
estimate, and the spread of that mean over resamples of the rows says how much of it is the sample. Rows
that share a group (the clauses of one document) are not independent, so when groups are given a resample
draws whole groups with replacement and averages over every row it drew: a document's rows come or go
together. The interval is the percentile interval of the resampled means.

Seeded, so the same scores always give the same interval; plain numpy, so it runs anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
_CELLS_PER_CHUNK = 4_000_000  # resamples x groups drawn at once: bounds memory on large test sets


@dataclass(frozen=True)
class Interval:
    """The difference a - b (mean over rows) and its bootstrap interval at `confidence`.

    `low` and `high` are NaN when there are fewer than two resampling units: one document says nothing about
    how the next would go, so no interval can claim confidence.
    """

    delta: float
    low: float
    high: float
    confidence: float
    n: int  # rows
    units: int  # what was resampled: groups, or rows when there are none

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        """`+3.1 [+1.2, +5.0]` (scaled, e.g. ROUGE F1 x 100); `+3.1 [no interval]` when undefined."""
        point = f"{self.delta * scale:+.{digits}f}"
        if not self.defined:
            return f"{point} [no interval]"
        return f"{point} [{self.low * scale:+.{digits}f}, {self.high * scale:+.{digits}f}]"


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    groups: Sequence[object] | np.ndarray | None = None,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """The interval of mean(a - b) over paired rows; `groups` (one label per row) resamples whole groups."""
    return paired_bootstraps({"": a}, {"": b}, groups, confidence=confidence, resamples=resamples, seed=seed)[
        ""
    ]


def paired_bootstraps(
    a: Mapping[str, Sequence[float] | np.ndarray],
    b: Mapping[str, Sequence[float] | np.ndarray],
    groups: Sequence[object] | np.ndarray | None = None,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Interval]:
    """One interval per metric a and b share, every metric over the same resamples (so they agree)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    metrics = [m for m in a if m in b]
    diffs = {}
    for m in metrics:
        x, y = np.asarray(a[m], dtype=float), np.asarray(b[m], dtype=float)
        if x.shape != y.shape or x.ndim != 1 or not len(x):
            raise ValueError(
                f"{m or 'scores'}: need two equally long, non-empty lists, got {x.shape} and {y.shape}"
            )
        diffs[m] = x - y
    if not diffs:
        return {}
    n = len(next(iter(diffs.values())))
    if any(len(d) != n for d in diffs.values()):
        raise ValueError("every metric needs a score for every row")
    if groups is None:
        codes = np.arange(n)
    else:
        labels = np.asarray(groups, dtype=object).astype(str)
        if len(labels) != n:
            raise ValueError(f"need one group label per row: {len(labels)} labels for {n} rows")
        codes = np.unique(labels, return_inverse=True)[1]
    units = int(codes.max()) + 1
    counts = np.bincount(codes, minlength=units).astype(float)
    sums = {m: np.bincount(codes, weights=d, minlength=units) for m, d in diffs.items()}

    alpha = (1 - confidence) / 2
    out = {}
    if units < 2:
        for m, d in diffs.items():
            out[m] = Interval(float(d.mean()), math.nan, math.nan, confidence, n, units)
        return out
    stats = {m: np.empty(resamples) for m in diffs}
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS_PER_CHUNK // units)
    for start in range(0, resamples, chunk):
        draw = rng.integers(0, units, size=(min(chunk, resamples - start), units))
        rows = counts[draw].sum(axis=1)
        for m in diffs:
            stats[m][start : start + len(draw)] = sums[m][draw].sum(axis=1) / rows
    for m, d in diffs.items():
        low, high = np.quantile(stats[m], [alpha, 1 - alpha])
        out[m] = Interval(float(d.mean()), float(low), float(high), confidence, n, units)
    return out
