"""What a `steep tune` trial does after training: its model generates on the validation split, with the
trial's decoding settings, through the path evaluation and serving share, and is scored there.

The trial itself (train -> these -> report to Tune) is `steep.pipeline.tune.run_trial`; this module holds
what runs on the trial's Ray node and needs no MLflow or Tune: load the trained model as the server would
(LoRA merged, `serving.precision`), summarize the validation texts, score them with ROUGE (steep.scoring).
Only the validation split ever reaches here: the test split stays untouched for the gate.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd

from steep import models
from steep.config import SteepConfig
from steep.scoring.candidates import evaluate
from steep.scoring.scores import Evaluation, Role


def load_trained(cfg: SteepConfig, base_model_dir: str, model_dir: str) -> models.Summarizer:
    """A trial's trained model, prepared as the server prepares it: an adapter over its base model (or the
    full weights for training.method=full), LoRA merged, at `serving.precision` on `serving.engine`."""
    if cfg.training.method == "full":
        summarizer = models.load_for_inference(model_dir)
    else:
        summarizer = models.load_for_inference(base_model_dir, model_dir)
    return summarizer.prepare_as_served(cfg)


def score_validation(
    cfg: SteepConfig, summarizer: models.Summarizer, validation: pd.DataFrame, generation: dict[str, Any]
) -> tuple[Evaluation, str]:
    """Summaries of the validation rows with the decoding settings `generation` (what evaluation and the
    server use: steep.pipeline.evaluation.decoding), scored with ROUGE per row; -> (the evaluation, the
    sha256 of the texts generation was given: what the trial read, recorded)."""
    given: list[str] = []

    def summarize(texts: list[str]) -> list[str]:
        given.extend(texts)
        return summarizer.summarize(texts, batch_size=cfg.evaluation.batch_size, **generation)

    return evaluate("trial", summarize, validation, role=Role.CHALLENGER), texts_digest(given)


def texts_digest(texts: list[str]) -> str:
    """sha256 over the texts in order, one per line."""
    h = hashlib.sha256()
    for text in texts:
        h.update(str(text).encode())
        h.update(b"\n")
    return h.hexdigest()
