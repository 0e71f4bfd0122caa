"""Drift statistics: rows reduced to lengths and hashed words, and what tells two such samples apart.

- input length: the population stability index (PSI) over the reference's length quintiles,
- vocabulary: the share of words never seen in the reference (OOV) and the Jensen-Shannon divergence of word
  frequencies over the reference's most frequent words,
- natural levels: what those metrics read for groups of the reference that the rest of it never saw.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from steep.inference_log import hash_word, words

if TYPE_CHECKING:
    import pandas as pd

EPS = 1e-4
LENGTH_BINS = 5  # quintiles: at min_window_rows=50 each bin still expects 10 rows
TOP_WORDS = 300  # JS over the reference's most frequent words plus one "other" bucket
CALIBRATION_ROUNDS = 40
CALIBRATION_QUANTILE = 0.95
CALIBRATION_MAX_ROWS = 2_000
METRICS = ("length_psi", "oov_share", "word_js")


@dataclass(frozen=True)
class Sample:
    """Rows reduced to what drift compares: length in words and the set of (hashed) distinct words."""

    lengths: list[int]
    vocab: list[frozenset[str]]
    groups: list[str] | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    @classmethod
    def from_texts(cls, texts: Iterable[str], salt: str, groups: Sequence[str] | None = None) -> Sample:
        lengths, vocab = [], []
        for text in texts:
            tokens = words(text)
            lengths.append(len(tokens))
            vocab.append(frozenset(hash_word(w, salt) for w in tokens))
        return cls(lengths, vocab, [str(g) for g in groups] if groups is not None else None)

    @classmethod
    def from_log(cls, frame: pd.DataFrame) -> Sample:
        """An inference-log window (`InferenceLog.window`): `n_words` and `word_hashes` are always logged."""
        lengths = [int(n) for n in frame["n_words"].fillna(0)]
        vocab = [frozenset(h) if isinstance(h, list | tuple) else frozenset() for h in frame["word_hashes"]]
        return cls(lengths, vocab)

    def subset(self, index: Sequence[int]) -> Sample:
        groups = [self.groups[i] for i in index] if self.groups is not None else None
        return Sample([self.lengths[i] for i in index], [self.vocab[i] for i in index], groups)

    def counts(self) -> Counter:
        """Document frequency: in how many rows each word occurs."""
        counts: Counter = Counter()
        for row in self.vocab:
            counts.update(row)
        return counts


def psi(reference: Iterable[float], current: Iterable[float], bins: int = LENGTH_BINS) -> float:
    """Population stability index of `current` against `reference`, on the reference's quantile bins."""
    ref = np.asarray(list(reference), dtype=float)
    cur = np.asarray(list(current), dtype=float)
    if ref.size == 0 or cur.size == 0:
        raise ValueError("psi needs values on both sides")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_share = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1) / ref.size
    cur_share = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1) / cur.size
    ref_share, cur_share = np.clip(ref_share, EPS, None), np.clip(cur_share, EPS, None)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def oov_share(reference: Mapping[str, int], current: Mapping[str, int]) -> float:
    """The share of current word occurrences whose word never occurs in the reference."""
    total = sum(current.values())
    if total == 0:
        return 0.0
    return sum(n for w, n in current.items() if w not in reference) / total


def js_divergence(reference: Mapping[str, int], current: Mapping[str, int]) -> float:
    """Jensen-Shannon divergence (base 2, so 0..1) of two word-frequency distributions."""
    vocab = set(reference) | set(current)
    if not vocab:
        return 0.0
    rt, ct = sum(reference.values()) or 1, sum(current.values()) or 1
    js = 0.0
    for w in vocab:
        p, q = reference.get(w, 0) / rt, current.get(w, 0) / ct
        m = (p + q) / 2
        if p:
            js += 0.5 * p * math.log2(p / m)
        if q:
            js += 0.5 * q * math.log2(q / m)
    return max(0.0, min(1.0, js))


def vocabulary_js(reference: Counter, current: Mapping[str, int], top: int = TOP_WORDS) -> float:
    """JS divergence over the reference's `top` words plus one bucket for all others.

    Rare words are too sparse to compare at window sizes of tens to thousands of rows (two samples of the
    same text would already differ); new words are what `oov_share` measures.
    """
    keep = [w for w, _ in reference.most_common(top)]
    ref = {w: reference[w] for w in keep}
    cur = {w: current.get(w, 0) for w in keep}
    ref["\0other"] = sum(reference.values()) - sum(ref.values())
    cur["\0other"] = sum(current.values()) - sum(cur.values())
    return js_divergence(ref, cur)


def measure(reference: Sample, current: Sample) -> dict[str, float]:
    """The three distribution metrics of `current` against `reference`."""
    ref_counts, cur_counts = reference.counts(), current.counts()
    return {
        "length_psi": psi(reference.lengths, current.lengths),
        "oov_share": oov_share(ref_counts, cur_counts),
        "word_js": vocabulary_js(ref_counts, cur_counts),
    }


def natural_levels(
    reference: Sample,
    rows: int,
    *,
    rounds: int = CALIBRATION_ROUNDS,
    quantile: float = CALIBRATION_QUANTILE,
    holdout: float = 0.2,
    seed: int = 0,
) -> dict[str, float]:
    """What each metric reads for a window of `rows` rows from groups the rest of the reference never saw.

    That is the level unseen documents of the training data's own kind reach, so a threshold below it would
    call ordinary new documents drift. Rows without groups count as their own group. {} when there are too
    few groups to hold some out.
    """
    groups = reference.groups or [str(i) for i in range(len(reference))]
    unique = sorted(set(groups))
    if len(unique) < 5 or rows < 1:
        return {}
    rows = min(rows, CALIBRATION_MAX_ROWS)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    rng = random.Random(seed)
    seen: dict[str, list[float]] = {k: [] for k in METRICS}
    for _ in range(rounds):
        order = unique[:]
        rng.shuffle(order)
        held = order[: max(1, round(len(order) * holdout))]
        rest = [i for g in order[len(held) :] for i in members[g]]
        pool = [i for g in held for i in members[g]]
        window = [rng.choice(pool) for _ in range(rows)]
        for key, value in measure(reference.subset(rest), reference.subset(window)).items():
            seen[key].append(value)
    return {k: float(np.quantile(v, quantile)) for k, v in seen.items()}
