"""An evaluation run: Lead-1 and every candidate model on the same test rows, generated where a `Generate`
function says, scored, and cached.

Scores of models that do not change between runs (the base model, the current champion) are cached per model,
test-split digest and settings, so a rerun only generates with the new challenger. The cache holds
predictions; scores are computed from them each time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from steep.scoring.scores import Evaluation, Role, lead1, mean_scores, row_scores

if TYPE_CHECKING:
    from steep.config import SteepConfig

Summarize = Callable[[list[str]], list[str]]


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


@dataclass(frozen=True)
class Candidate:
    """A model to evaluate: `load` gives a Summarizer; `cache_id` is set for models that never change."""

    name: str
    role: Role
    load: Callable[[], object]
    cache_id: str | None = None
    portable: bool = True  # `load` works on any node of the cluster (weights in MLflow or on shared storage)


def pyfunc_summarizer(model_uri: str, cfg: SteepConfig) -> object:
    """The Summarizer inside a logged steep pyfunc model, prepared as the server prepares it
    (steep.serving.model_slot): evaluated exactly as it will be served."""
    import mlflow

    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().summarizer.prepare_as_served(cfg)


# --------------------------------------------------------------------------------------------- generate
Generate = Callable[[Candidate, list[str]], list[str]]  # a candidate's summaries of texts, in order


def in_process(generation: dict[str, Any], batch_size: int) -> Generate:
    """Generate here: load the candidate, summarize with the decoding settings (`Summarizer.summarize`)."""

    def run(cand: Candidate, texts: list[str]) -> list[str]:
        return cand.load().summarize(texts, batch_size=batch_size, **generation)  # type: ignore[attr-defined]

    return run


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
