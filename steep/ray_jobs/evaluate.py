"""Evaluation: batched greedy generation on the test split, ROUGE-1/2/L (stemmed) and the length ratio.

Scores of models that do not change between runs (the base model, the current champion) are cached per
model and test-split digest, so a rerun only generates with the new challenger. Lead-1 (the first sentence of
the text) is the extractive reference line every summarizer should beat.

Every evaluation carries its role in the gate (challenger, champion, base model, baseline) beside the name
it is shown with ("champion v3", "lead-1"), and its per-row scores: the challenger's difference to every
other model gets a paired bootstrap interval over the same rows (`compare`), whole documents resampled.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd
from rouge_score import rouge_scorer

from steep.registry import METRIC_LABELS, METRICS
from steep.significance import Interval, paired_bootstraps

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
    """Generate with `summarize` over the test split and score it; reuse the cached predictions for `key`.

    The cache holds predictions: scores are computed from them each time, per row, so caches written before
    per-row scores existed still serve.
    """
    path = cache_dir / f"{key}.json" if cache_dir is not None and key is not None else None
    references = list(test["summary"])
    if path is not None and path.exists():
        predictions = json.loads(path.read_text()).get("predictions")
        if isinstance(predictions, list) and len(predictions) == len(references):
            rows = row_scores(predictions, references)
            return Evaluation(name, role, mean_scores(rows), predictions, cached=True, rows=rows)
    predictions = list(summarize(list(test["text"])))
    rows = row_scores(predictions, references)
    result = Evaluation(name, role, mean_scores(rows), predictions, rows=rows)
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


def intervals_plot(evaluations: Sequence[Evaluation], path: Path) -> Path | None:
    """The challenger minus each other model per metric, with its interval: what the gate is sure of.

    None when there is nothing to draw (no challenger with intervals)."""
    challenger = next((e for e in evaluations if e.role is Role.CHALLENGER and e.versus), None)
    if challenger is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {e.key: e.name for e in evaluations}
    keys = list(challenger.versus)
    first = challenger.versus[keys[0]][METRICS[0]]
    fig, axes = plt.subplots(
        1, len(METRICS), figsize=(3 * len(METRICS) + 1, 0.5 * len(keys) + 1.6), dpi=120, sharey=True
    )
    for ax, metric in zip(axes, METRICS, strict=True):
        for y, key in enumerate(keys):
            iv = challenger.versus[key][metric]
            color = "tab:green" if iv.low > 0 else "tab:red" if iv.high < 0 else "tab:gray"
            if iv.defined:
                ax.plot([iv.low * 100, iv.high * 100], [y, y], color=color, linewidth=2.5)
            ax.plot([iv.delta * 100], [y], "o", color=color)
            ax.annotate(
                iv.format(), (iv.delta * 100, y), textcoords="offset points", xytext=(0, 6),
                ha="center", fontsize=7,
            )  # fmt: skip
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(METRIC_LABELS[metric], fontsize=9)
        ax.set_xlabel("challenger minus model (F1 x 100)", fontsize=8)
        ax.set_ylim(-0.6, len(keys) - 0.4)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_yticks(range(len(keys)), [names.get(k, k) for k in keys])
    axes[0].invert_yaxis()  # top to bottom in the order of the result table
    unit = "groups" if first.units < first.n else "rows"
    fig.suptitle(
        f"{first.confidence:.0%} paired bootstrap intervals: {first.n} test rows, {first.units} {unit} "
        "resampled",
        fontsize=9,
    )
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
    portable: bool = True  # `load` works on any node of the cluster (weights in MLflow or on shared storage)


def pyfunc_summarizer(model_uri: str, precision: str = "auto") -> object:
    """The Summarizer inside a logged steep pyfunc model, prepared as the server prepares it
    (steep.serving.model_slot): evaluated exactly as it will be served."""
    import mlflow

    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().summarizer.prepare(precision)


# --------------------------------------------------------------------------------------------- generate
Generate = Callable[[Candidate, list[str]], list[str]]  # a candidate's summaries of texts, in order


def in_process(generation: dict[str, Any], batch_size: int) -> Generate:
    """Generate here: load the candidate, summarize with the decoding settings (`Summarizer.summarize`)."""

    def run(cand: Candidate, texts: list[str]) -> list[str]:
        return cand.load().summarize(texts, batch_size=batch_size, **generation)  # type: ignore[attr-defined]

    return run


def on_ray_nodes(
    generation: dict[str, Any], batch_size: int, tracking_uri: str, log: Callable[[str], None] = print
) -> Generate:
    """Generate as Ray tasks, one per node that offers CPUs, each on a contiguous shard of the texts.

    Each task loads the candidate on its node (from MLflow, or a folder every node sees) and uses the node's
    CPUs; the shards come back in order. Candidates that only this machine can load stay in-process.
    Needs a connected Ray (`ray.init`).
    """
    here = in_process(generation, batch_size)

    def run(cand: Candidate, texts: list[str]) -> list[str]:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= 1]
        if not cand.portable or len(nodes) < 2 or len(texts) < 2:
            return here(cand, texts)
        nodes = nodes[: len(texts)]
        step = -(-len(texts) // len(nodes))
        task = ray.remote(_summarize_shard)
        refs = [
            task.options(
                num_cpus=int(node["Resources"]["CPU"]),
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
            ).remote(cand.load, texts[i * step : (i + 1) * step], generation, batch_size, tracking_uri)
            for i, node in enumerate(nodes)
        ]
        parts = ray.get(refs)
        log(f"{cand.name}: {len(texts)} summaries as Ray tasks on {len(parts)} nodes "
            f"({', '.join(f'{name}: {len(out)}' for name, out in parts)})")  # fmt: skip
        return [text for _, out in parts for text in out]

    return run


def _summarize_shard(
    load: Callable[[], object],
    texts: list[str],
    generation: dict[str, Any],
    batch_size: int,
    tracking_uri: str,
) -> tuple[str, list[str]]:
    """One Ray task: the node's name (its steep-node label on a steep stack) and the shard's summaries."""
    import mlflow
    import ray
    import torch

    mlflow.set_tracking_uri(tracking_uri)  # models:/ URIs resolve through the driver's tracking server

    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    ctx = ray.get_runtime_context()
    name = ctx.get_node_labels().get("steep-node", ctx.get_node_id()[:8])
    return name, load().summarize(texts, batch_size=batch_size, **generation)  # type: ignore[attr-defined]


def evaluate_candidates(
    candidates: Sequence[Candidate],
    test: pd.DataFrame,
    split_digest: str,
    *,
    generate: Generate,
    max_new_tokens: int,
    cache_dir: Path,
    settings: dict,
    log: Callable[[str], None] = print,
) -> list[Evaluation]:
    """Lead-1 plus every candidate on the same test rows; unchanged models come from the cache."""
    results = [evaluate_lead1(test)]
    for cand in candidates:
        key = cache_key(cand.cache_id, split_digest, settings) if cand.cache_id else None

        def summarize(texts: list[str], cand: Candidate = cand) -> list[str]:
            log(f"{cand.name}: generating {len(texts)} summaries (up to {max_new_tokens} tokens each)")
            return generate(cand, texts)

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
