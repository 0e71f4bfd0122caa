"""Evaluate, log and gate a trained model: the candidates of the comparison, their scores on the MLflow run,
and the promotion decision from their roles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mlflow

from ray_jobs.evaluate import (
    Candidate,
    Evaluation,
    Role,
    comparison_plot,
    evaluate_candidates,
    predictions_table,
    pyfunc_summarizer,
)
from steep import models
from steep.config import SteepConfig
from steep.data import Splits
from steep.pipeline.training import TrainResult
from steep.registry import CHAMPION, GateDecision, Registry, promotion_decision


def candidates(cfg: SteepConfig, result: TrainResult, registry: Registry) -> list[Candidate]:
    """The challenger, the base model and (when there is one) the current champion, each loaded lazily.

    The base model and the champion never change, so their scores are cached per model and prompt format.
    Each is prepared at the served precision: the gate scores what the server will generate.
    """
    kind = models.model_kind(result.base_model_dir, cfg.model.kind)
    fmt = models.PromptFormat.from_config(cfg.model, kind)
    precision = cfg.serving.precision
    found = [
        Candidate("challenger", Role.CHALLENGER, lambda: pyfunc_summarizer(result.model_uri, precision)),
        Candidate(
            "base",
            Role.BASE,
            lambda: models.load_for_inference(result.base_model_dir, fmt=fmt).prepare(precision),
            cache_id=f"base:{cfg.model.source}:{fmt}",
        ),
    ]
    champion = registry.alias(CHAMPION)
    if champion is not None:
        uri = f"models:/{registry.name}/{champion.version}"
        found.append(
            Candidate(
                f"champion v{champion.version}",
                Role.CHAMPION,
                lambda: pyfunc_summarizer(uri, precision),
                cache_id=f"{uri}:{fmt}",
            )
        )
    return found


def evaluate_run(
    cfg: SteepConfig,
    splits: Splits,
    result: TrainResult,
    registry: Registry,
    log: Callable[[str], None] = print,
) -> list[Evaluation]:
    """Lead-1 and every candidate on the test split (at most `evaluation.max_examples` rows)."""
    test = splits.test
    if cfg.evaluation.max_examples:
        test = test.head(cfg.evaluation.max_examples)
    settings = {
        "max_new_tokens": cfg.serving.max_new_tokens,
        "precision": cfg.serving.precision,
        "max_source_tokens": cfg.model.max_source_tokens,
        "rows": len(test),
    }
    return evaluate_candidates(
        candidates(cfg, result, registry),
        test,
        splits.digests["test"],
        max_new_tokens=cfg.serving.max_new_tokens,
        batch_size=cfg.evaluation.batch_size,
        cache_dir=cfg.home / "cache" / "eval",
        settings=settings,
        log=log,
    )


def log_evaluation(cfg: SteepConfig, run_id: str, splits: Splits, evaluations: Sequence[Evaluation]) -> None:
    """Scores (`eval_<model>_<metric>`), the per-example predictions table and the comparison plot, on the
    training run. MLflow must already point at the project's store."""
    client = mlflow.MlflowClient()
    for ev in evaluations:
        prefix = "eval_" + ev.key.replace("-", "")
        for key, value in ev.scores.as_dict().items():
            client.log_metric(run_id, f"{prefix}_{key}", float(value))
    test = splits.test.head(len(evaluations[0].predictions))
    with mlflow.start_run(run_id=run_id):
        mlflow.log_table(predictions_table(test, evaluations), "eval/predictions.json")
        plot = comparison_plot(evaluations, cfg.home / "plots" / f"{run_id}-eval.png")
        mlflow.log_artifact(str(plot), "eval")


def decide(cfg: SteepConfig, evaluations: Sequence[Evaluation]) -> GateDecision:
    """The gate over the evaluations: the challenger against the champion, or the base model without one."""
    by_role = {e.role: e for e in evaluations}
    champion = by_role.get(Role.CHAMPION)
    return promotion_decision(
        cfg.evaluation,
        by_role[Role.CHALLENGER].scores.as_dict(),
        champion.scores.as_dict() if champion else None,
        by_role[Role.BASE].scores.as_dict(),
        champion_label=champion.name if champion else "champion",
    )
