"""Evaluate, log and gate a trained model: the candidates of the comparison, their scores on the MLflow run,
and the promotion decision from their roles.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import mlflow
import pandas as pd

from steep import models
from steep.config import SteepConfig
from steep.data import Splits
from steep.pipeline.ray_session import RaySession
from steep.pipeline.training import TrainResult
from steep.ray_jobs.evaluate import on_ray_nodes
from steep.registry import CHAMPION, GateDecision, Registry, promotion_decision
from steep.scoring.candidates import (
    Candidate,
    Generate,
    evaluate_candidates,
    in_process,
    predictions_table,
    pyfunc_summarizer,
)
from steep.scoring.plots import comparison_plot, intervals_plot
from steep.scoring.scores import Evaluation, Role, compare
from steep.significance import DEFAULT_CONFIDENCE


def candidates(cfg: SteepConfig, result: TrainResult, registry: Registry) -> list[Candidate]:
    """The challenger, the base model and (when there is one) the current champion, each loaded lazily.

    A logged model never changes, so each one's predictions are cached per model and prompt format: the
    base model's and the champion's serve every run, the challenger's a resumed one.
    Each is prepared at the served precision: the gate scores what the server will generate.
    """
    kind = models.model_kind(result.base_model_dir, cfg.model.kind)
    fmt = models.PromptFormat.from_config(cfg.model, kind)
    served = f"{cfg.serving.precision}:{cfg.serving.engine}"  # an int4 model's scores are its own
    found = [
        Candidate(
            "challenger",
            Role.CHALLENGER,
            lambda: pyfunc_summarizer(result.model_uri, cfg),
            cache_id=f"{result.model_uri}:{fmt}:{served}" if result.model_uri else None,  # a resumed run's
        ),
        Candidate(
            "base",
            Role.BASE,
            lambda: models.load_for_inference(result.base_model_dir, fmt=fmt).prepare_as_served(cfg),
            cache_id=f"base:{cfg.model.source}:{fmt}:{served}",
            portable=False,  # its folder is on this machine (and cached after the first run)
        ),
    ]
    champion = registry.alias(CHAMPION)
    if champion is not None:
        uri = f"models:/{registry.name}/{champion.version}"
        found.append(
            Candidate(
                f"champion v{champion.version}",
                Role.CHAMPION,
                lambda: pyfunc_summarizer(uri, cfg),
                cache_id=f"{uri}:{fmt}:{served}",
            )
        )
    return found


def evaluate_run(
    cfg: SteepConfig,
    splits: Splits,
    result: TrainResult,
    registry: Registry,
    log: Callable[[str], None] = print,
    ray_address: str | None = None,
) -> list[Evaluation]:
    """Lead-1 and every candidate on the test split (at most `evaluation.max_examples` rows), the challenger
    with its bootstrap intervals against each of them (whole groups of `data.group_column` resampled)."""
    test = splits.test
    if cfg.evaluation.max_examples:
        test = test.head(cfg.evaluation.max_examples)
    generation = decoding(cfg)
    settings = {
        **generation,
        "precision": cfg.serving.precision,
        "max_source_tokens": cfg.model.max_source_tokens,
        "rows": len(test),
    }
    with _generator(cfg, generation, ray_address, log) as generate:
        evaluations = evaluate_candidates(
            candidates(cfg, result, registry),
            test,
            splits.digests["test"],
            generate=generate,
            max_new_tokens=cfg.serving.max_new_tokens,
            cache_dir=cfg.home / "cache" / "eval",
            settings=settings,
            log=log,
        )
    return with_intervals(cfg, test, evaluations)


def decoding(cfg: SteepConfig) -> dict[str, Any]:
    """The decoding settings the server uses: the gate scores what users are served."""
    serving = cfg.serving
    return {"max_new_tokens": serving.max_new_tokens, "repetition_penalty": serving.repetition_penalty}


@contextlib.contextmanager
def _generator(
    cfg: SteepConfig, generation: dict[str, Any], ray_address: str | None, log: Callable[[str], None]
) -> Iterator[Generate]:
    """Where candidates generate: as Ray tasks over the nodes of the stack's cluster when it has several
    with CPUs, else in this process (a single node gains nothing from a task per node)."""
    batch = cfg.evaluation.batch_size
    if not ray_address:
        yield in_process(generation, batch)
        return
    with RaySession(ray_address) as ray_session:
        if len(ray_session.connect()) < 2:
            yield in_process(generation, batch)
        else:
            yield on_ray_nodes(generation, batch, mlflow.get_tracking_uri(), log)


def interval_level(cfg: SteepConfig) -> float:
    """The confidence the intervals are computed at: the gate's, or 95% when the point rule decides."""
    return cfg.evaluation.confidence or DEFAULT_CONFIDENCE


def with_intervals(
    cfg: SteepConfig, test: pd.DataFrame, evaluations: Sequence[Evaluation]
) -> list[Evaluation]:
    """The challenger's intervals against every other model on `test` (the rows the evaluations scored):
    seeded by project.seed, so a rerun on the same scores gives the same intervals."""
    groups = list(test["group"]) if "group" in test else None  # no group_column: one row, one group
    return compare(
        evaluations,
        groups,
        confidence=interval_level(cfg),
        resamples=cfg.evaluation.bootstrap_resamples,
        seed=cfg.project.seed,
    )


def log_evaluation(cfg: SteepConfig, run_id: str, splits: Splits, evaluations: Sequence[Evaluation]) -> None:
    """Scores (`eval_<model>_<metric>`), the challenger's differences with their intervals
    (`delta_<model>_<metric>` and `_low`/`_high`), the per-example predictions table, the comparison plot and
    the intervals plot, on the training run. MLflow must already point at the project's store."""
    client = mlflow.MlflowClient()
    for ev in evaluations:
        prefix = "eval_" + ev.key.replace("-", "")
        for key, value in ev.scores.as_dict().items():
            client.log_metric(run_id, f"{prefix}_{key}", float(value))
        for other, intervals in ev.versus.items():
            for metric, iv in intervals.items():
                name = f"delta_{other.replace('-', '')}_{metric}"
                client.log_metric(run_id, name, iv.delta)
                if iv.defined:  # no interval from a single group: nothing to log rather than NaN
                    client.log_metric(run_id, f"{name}_low", iv.low)
                    client.log_metric(run_id, f"{name}_high", iv.high)
    intervals = next((ev.versus for ev in evaluations if ev.versus), None)
    if intervals:
        some = next(iter(next(iter(intervals.values())).values()))
        client.log_metric(run_id, "delta_confidence", some.confidence)
        client.log_metric(run_id, "delta_resampled_units", some.units)
    test = splits.test.head(len(evaluations[0].predictions))
    with mlflow.start_run(run_id=run_id):
        mlflow.log_table(predictions_table(test, evaluations), "eval/predictions.json")
        plot = comparison_plot(evaluations, cfg.home / "plots" / f"{run_id}-eval.png")
        mlflow.log_artifact(str(plot), "eval")
        shown = intervals_plot(evaluations, cfg.home / "plots" / f"{run_id}-intervals.png")
        if shown is not None:
            mlflow.log_artifact(str(shown), "eval")


def decide(cfg: SteepConfig, evaluations: Sequence[Evaluation]) -> GateDecision:
    """The gate over the evaluations: the challenger against the champion, or the base model without one,
    and against `evaluation.must_beat`; with `evaluation.confidence`, on the challenger's intervals."""
    by_role = {e.role: e for e in evaluations}
    champion = by_role.get(Role.CHAMPION)
    challenger = by_role[Role.CHALLENGER]
    return promotion_decision(
        cfg.evaluation,
        challenger.scores.as_dict(),
        champion.scores.as_dict() if champion else None,
        by_role[Role.BASE].scores.as_dict(),
        champion_label=champion.name if champion else "champion",
        baselines={e.key: e.scores.as_dict() for e in evaluations if e.role is Role.BASELINE},
        intervals=challenger.versus,
    )
