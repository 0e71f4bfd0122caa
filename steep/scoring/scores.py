"""What a model's summaries score: ROUGE-1/2/L (stemmed) and the length ratio, per row and on average, and
the challenger's paired bootstrap interval against every other model over the same rows.

Every evaluation carries its role in the gate (challenger, champion, base model, baseline) beside the name
it is shown with ("champion v3", "lead-1"), and its per-row scores. Lead-1 (the first sentence of the text)
is the extractive reference line every summarizer should beat.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum

from rouge_score import rouge_scorer

from steep.registry import METRICS
from steep.significance import Interval, paired_bootstraps

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


@dataclass(frozen=True)
class Scores:
    rouge1: float
    rouge2: float
    rougeL: float
    length_ratio: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class Role(StrEnum):
    """What a model is in the comparison the gate makes."""

    CHALLENGER = "challenger"  # the model this run trained
    CHAMPION = "champion"  # the version the registry serves now
    BASE = "base"  # the model fine-tuning started from
    BASELINE = "baseline"  # a reference line without a model (lead-1)


@dataclass(frozen=True)
class Evaluation:
    name: str  # as shown: "challenger", "champion v3", "lead-1"
    role: Role
    scores: Scores
    predictions: list[str]
    cached: bool = False
    rows: dict[str, list[float]] = field(default_factory=dict)  # per-row scores by metric, in test order
    # the challenger's: its difference to each other model (by key) per metric, with the bootstrap interval
    versus: dict[str, dict[str, Interval]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The name in MLflow metric and tag keys: the role, or which baseline it is ("lead-1")."""
        return self.name if self.role is Role.BASELINE else self.role.value


def row_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """Per row: ROUGE F1 with Porter stemming, and the ratio of prediction to reference length in words."""
    if len(predictions) != len(references) or not references:
        raise ValueError(
            f"need as many predictions as references, got {len(predictions)} and {len(references)}"
        )
    scorer = rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True)
    rows: dict[str, list[float]] = {m: [] for m in (*METRICS, "length_ratio")}
    for pred, ref in zip(predictions, references, strict=True):
        result = scorer.score(ref, pred)
        for m in METRICS:
            rows[m].append(result[m].fmeasure)
        rows["length_ratio"].append(len(pred.split()) / max(1, len(ref.split())))
    return rows


def mean_scores(rows: dict[str, list[float]]) -> Scores:
    n = len(rows["length_ratio"])
    return Scores(**{m: sum(rows[m]) / n for m in (*METRICS, "length_ratio")}, n=n)


def score(predictions: Sequence[str], references: Sequence[str]) -> Scores:
    """Mean ROUGE F1 with Porter stemming, and the mean ratio of prediction to reference length in words."""
    return mean_scores(row_scores(predictions, references))


def lead1(text: str) -> str:
    """The first sentence of a text (the whole text when it has no sentence end)."""
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0]


def compare(
    evaluations: Sequence[Evaluation],
    groups: Sequence[object] | None,
    *,
    confidence: float,
    resamples: int,
    seed: int,
) -> list[Evaluation]:
    """The evaluations, the challenger now carrying `versus`: for every other model and metric, the paired
    bootstrap interval of challenger minus it over the same rows. `groups` (one label per row, e.g. the
    document) makes a resample draw whole groups, since rows of one document are not independent."""
    challenger = next((e for e in evaluations if e.role is Role.CHALLENGER), None)
    if challenger is None or not challenger.rows:
        return list(evaluations)
    mine = {m: challenger.rows[m] for m in METRICS}
    versus = {
        other.key: paired_bootstraps(
            mine,
            {m: other.rows[m] for m in METRICS},
            groups,
            confidence=confidence,
            resamples=resamples,
            seed=seed,
        )
        for other in evaluations
        if other is not challenger and other.rows
    }
    return [replace(e, versus=versus) if e is challenger else e for e in evaluations]
