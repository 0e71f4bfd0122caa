"""Evaluation: batched greedy generation on the test split, ROUGE-1/2/L (stemmed) and the length ratio.

Scores of models that do not change between runs (the base model, the current champion) are cached per
model and test-split digest, so a rerun only generates with the new challenger. Lead-1 (the first sentence of
the text) is the extractive reference line every summarizer should beat.

Every evaluation carries its role in the gate (challenger, champion, base model, baseline) beside the name
it is shown with ("champion v3", "lead-1").
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

import pandas as pd
from rouge_score import rouge_scorer

from steep.registry import METRICS

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")

Summarize = Callable[[list[str]], list[str]]


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

    @property
    def key(self) -> str:
        """The name in MLflow metric and tag keys: the role, or which baseline it is ("lead-1")."""
        return self.name if self.role is Role.BASELINE else self.role.value


def score(predictions: Sequence[str], references: Sequence[str]) -> Scores:
    """Mean ROUGE F1 with Porter stemming, and the mean ratio of prediction to reference length in words."""
    if len(predictions) != len(references) or not references:
        raise ValueError(
            f"need as many predictions as references, got {len(predictions)} and {len(references)}"
        )
    scorer = rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True)
    totals = dict.fromkeys(METRICS, 0.0)
    ratio = 0.0
    for pred, ref in zip(predictions, references, strict=True):
        result = scorer.score(ref, pred)
        for m in METRICS:
            totals[m] += result[m].fmeasure
        ratio += len(pred.split()) / max(1, len(ref.split()))
    n = len(references)
    return Scores(**{m: totals[m] / n for m in METRICS}, length_ratio=ratio / n, n=n)


def lead1(text: str) -> str:
    """The first sentence of a text (the whole text when it has no sentence end)."""
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0]


def cache_key(model_id: str, split_digest: str, settings: dict) -> str:
    blob = json.dumps({"model": model_id, "split": split_digest, **settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def evaluate(
    name: str,
    summarize: Summarize,
    test: pd.DataFrame,
    *,
    role: Role,
    cache_dir: Path | None = None,
    key: str | None = None,
) -> Evaluation:
    """Generate with `summarize` over the test split and score it; reuse the cached result for `key`."""
    path = cache_dir / f"{key}.json" if cache_dir is not None and key is not None else None
    if path is not None and path.exists():
        data = json.loads(path.read_text())
        return Evaluation(name, role, Scores(**data["scores"]), data["predictions"], cached=True)
    predictions = list(summarize(list(test["text"])))
    result = Evaluation(name, role, score(predictions, list(test["summary"])), predictions)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"scores": result.scores.as_dict(), "predictions": predictions}))
    return result


def evaluate_lead1(test: pd.DataFrame) -> Evaluation:
    return evaluate("lead-1", lambda texts: [lead1(t) for t in texts], test, role=Role.BASELINE)


def predictions_table(test: pd.DataFrame, evaluations: Sequence[Evaluation]) -> pd.DataFrame:
    """One row per test example: id, text, reference, and each model's prediction."""
    table = test[["id", "text", "summary"]].rename(columns={"summary": "reference"}).reset_index(drop=True)
    for ev in evaluations:
        table[ev.name] = ev.predictions
    return table


def comparison_plot(evaluations: Sequence[Evaluation], path: Path) -> Path:
    """Grouped bars of ROUGE-1/2/L per model: the picture of the gate decision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    width = 0.8 / max(1, len(evaluations))
    for i, ev in enumerate(evaluations):
        xs = [j + i * width for j in range(len(METRICS))]
        values = [getattr(ev.scores, m) * 100 for m in METRICS]
        bars = ax.bar(xs, values, width, label=ev.name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(
        [j + width * (len(evaluations) - 1) / 2 for j in range(len(METRICS))],
        ["ROUGE-1", "ROUGE-2", "ROUGE-L"],
    )
    ax.set_ylabel("F1 x 100")
    ax.set_title(f"test split, n={evaluations[0].scores.n}")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------- candidates
@dataclass(frozen=True)
class Candidate:
    """A model to evaluate: `load` gives a Summarizer; `cache_id` is set for models that never change."""

    name: str
    role: Role
    load: Callable[[], object]
    cache_id: str | None = None


def pyfunc_summarizer(model_uri: str, precision: str = "auto") -> object:
    """The Summarizer inside a logged steep pyfunc model, prepared as the server prepares it
    (steep.serving.model_slot): evaluated exactly as it will be served."""
    import mlflow

    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().summarizer.prepare(precision)


def evaluate_candidates(
    candidates: Sequence[Candidate],
    test: pd.DataFrame,
    split_digest: str,
    *,
    max_new_tokens: int,
    batch_size: int,
    cache_dir: Path,
    settings: dict,
    log: Callable[[str], None] = print,
) -> list[Evaluation]:
    """Lead-1 plus every candidate on the same test rows; unchanged models come from the cache."""
    results = [evaluate_lead1(test)]
    for cand in candidates:
        key = cache_key(cand.cache_id, split_digest, settings) if cand.cache_id else None
        loaded: list[object] = []

        def summarize(texts: list[str], cand: Candidate = cand, loaded: list[object] = loaded) -> list[str]:
            log(f"{cand.name}: generating {len(texts)} summaries (up to {max_new_tokens} tokens each)")
            loaded.append(cand.load())
            return loaded[0].summarize(texts, max_new_tokens=max_new_tokens, batch_size=batch_size)

        ev = evaluate(
            cand.name, summarize, test, role=cand.role, cache_dir=cache_dir if key else None, key=key
        )
        s = ev.scores
        log(
            f"{cand.name:<12} ROUGE-1 {s.rouge1 * 100:5.2f}  ROUGE-2 {s.rouge2 * 100:5.2f}"
            f"  ROUGE-L {s.rougeL * 100:5.2f}"
            f"  length ratio {s.length_ratio:.2f}" + ("  (cached)" if ev.cached else "")
        )
        results.append(ev)
    return results
