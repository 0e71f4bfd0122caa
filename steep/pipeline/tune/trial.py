"""What one `steep tune` trial is: the context every trial is shipped once (never the test split), the
trial's config, and `run_trial`, which runs in a Ray task of its own: train (a child MLflow run) -> generate
on the validation split with the trial's decoding settings -> report to Ray Tune. A failure is recorded on
the child run and raised: Tune reports it and the search goes on.

Ray and torch are imported inside `run_trial`, which only a Ray worker runs.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param

from steep import tracking
from steep.config import SteepConfig, set_path
from steep.data import Splits, frame_digest
from steep.pipeline import training
from steep.pipeline.evaluation import decoding
from steep.pipeline.tune.space import settle
from steep.quiet import quiet_third_parties
from steep.ray_jobs import tune_trial

TRIAL_TAG = "steep.tune.trial_id"  # Ray Tune's trial id, on each child run
OUTCOME_TAG = "steep.tune.outcome"  # finished / stopped: why / failed: why
SCORED_TAG = "steep.tune.scored_split_digest"  # the digest of the rows the trial generated on and scored
GENERATED_TAG = "steep.tune.generated_texts_sha256"  # of the texts its generation was given


@dataclass(frozen=True)
class TrialContext:
    """What every trial gets, once, through Ray's object store: the base config, the train and validation
    rows (never the test split's), where to record, and the threads to train with."""

    config: dict[str, Any]  # the base config, paths absolute
    root: str | None
    train: pd.DataFrame
    validation: pd.DataFrame
    digests: dict[str, str]  # of train and validation only
    tracking_uri: str | None
    parent_run_id: str
    parent_name: str
    threads: int


def trial_context(
    cfg: SteepConfig, splits: Splits, *, tracking_uri: str | None, parent_run_id: str, parent_name: str,
    threads: int,
) -> TrialContext:  # fmt: skip
    """The trials' view of the data: train and validation; the test split is left out, so no trial can
    read it."""
    return TrialContext(
        config=cfg.model_dump(mode="json"),
        root=str(cfg.root),
        train=splits.train.reset_index(drop=True),
        validation=splits.validation.reset_index(drop=True),
        digests={k: v for k, v in splits.digests.items() if k in ("train", "validation")},
        tracking_uri=tracking_uri,
        parent_run_id=parent_run_id,
        parent_name=parent_name,
        threads=threads,
    )


def trial_config(context: TrialContext, settings: dict[str, Any]) -> SteepConfig:
    """The base config with a trial's settings, trained in-process with the validation loss on."""
    data = copy.deepcopy(context.config)
    for key, value in settings.items():
        set_path(data, key, value)
    data["training"]["workers"] = 0  # the trial is one Ray task: the loop runs in its own process
    data["training"]["validation_loss"] = True  # what the early stopping reads
    cfg = SteepConfig.model_validate(data)
    cfg._root = Path(context.root) if context.root else None
    return cfg


def trial_index(trial_id: str) -> int:
    """Ray Tune numbers trials `<experiment>_00000`, `_00001`, ...: -> 1, 2, ..."""
    try:
        return int(trial_id.rsplit("_", 1)[1]) + 1
    except (IndexError, ValueError):
        return 0


def run_trial(values: dict[str, Any], context: TrialContext) -> None:
    """One trial, in its own Ray task: train (a child MLflow run) -> validation ROUGE -> report to Tune.

    Each epoch's validation loss reaches Tune from inside the training loop (ray_jobs.train.RayTrain),
    where an early stop ends this function. A failure is recorded on the child run (one is made if training
    never started) and raised: Tune reports it and the search goes on.
    """
    import ray
    import ray.tune
    import torch

    quiet_third_parties()  # a Ray worker is a process of its own
    torch.set_num_threads(context.threads)
    trial_id = ray.tune.get_context().get_trial_id()
    index = trial_index(trial_id)
    settings = {key: settle(value) for key, value in values.items()}
    tags = {
        "mlflow.parentRunId": context.parent_run_id,
        TRIAL_TAG: trial_id,
        "steep.tune.trial": str(index),
        "steep.tune.settings": json.dumps(settings),
    }
    experiment_id = tracking.setup(SteepConfig.model_validate(context.config), context.tracking_uri)
    try:
        cfg = trial_config(context, settings)
        splits = Splits(context.train, context.validation, context.validation.head(0), dict(context.digests))
        result = training.train(
            cfg, splits, tracking_uri=context.tracking_uri, run_name=f"{context.parent_name}-trial-{index}",
            tags=tags, log_model=False,
        )  # fmt: skip
        summarizer = tune_trial.load_trained(cfg, result.base_model_dir, result.model_dir)
        generation = decoding(cfg)  # as evaluation and the server generate
        evaluation, generated = tune_trial.score_validation(cfg, summarizer, splits.validation, generation)
        node = _node_name(ray)
        _log_trial(result.run_id, cfg, evaluation, splits.validation, node)
        mlflow.MlflowClient().set_tag(result.run_id, GENERATED_TAG, generated)
    except Exception as exc:
        _record_failure(experiment_id, context, index, tags, settings, exc)
        raise
    scores = evaluation.scores
    last = (
        result.validation[-1] if result.validation else {"epoch": cfg.training.epochs, "val_loss": math.nan}
    )
    ray.tune.report({
        "epoch": last["epoch"], "val_loss": last["val_loss"], "step": result.metrics.get("steps", 0.0),
        "val_score": getattr(scores, cfg.evaluation.metric), "val_rouge1": scores.rouge1,
        "val_rouge2": scores.rouge2, "val_rougeL": scores.rougeL, "val_length_ratio": scores.length_ratio,
        "run_id": result.run_id, "node": node,
    })  # fmt: skip


def _node_name(ray: Any) -> str:
    ctx = ray.get_runtime_context()
    node_id = ctx.get_node_id()
    return ctx.get_node_labels().get("steep-node", node_id[:8])


def _log_trial(run_id: str, cfg: SteepConfig, evaluation: Any, validation: pd.DataFrame, node: str) -> None:
    """The trial's validation scores, which rows they came from (a digest) and its predictions."""
    client = mlflow.MlflowClient()
    now = int(time.time() * 1000)
    values = {f"val_{k}": v for k, v in evaluation.scores.as_dict().items() if k != "n"}
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()])
    client.set_tag(run_id, SCORED_TAG, frame_digest(validation))
    client.set_tag(run_id, OUTCOME_TAG, "finished")
    client.set_tag(run_id, "steep.ray_node", node)
    table = pd.DataFrame(
        {"id": list(validation["id"]), "reference": list(validation["summary"]),
         "prediction": evaluation.predictions, cfg.evaluation.metric: evaluation.rows[cfg.evaluation.metric]}
    )  # fmt: skip
    client.log_table(run_id, table, "tune/validation_predictions.json")


def _record_failure(
    experiment_id: str, context: TrialContext, index: int, tags: dict[str, str], settings: dict[str, Any],
    exc: BaseException,
) -> None:  # fmt: skip
    """Mark the trial's child run FAILED with the reason; make one if training never started."""
    client = mlflow.MlflowClient()
    why = short_error(exc)
    found = client.search_runs([experiment_id], f"tags.`{TRIAL_TAG}` = '{tags[TRIAL_TAG]}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
    else:
        run = client.create_run(experiment_id, run_name=f"{context.parent_name}-trial-{index}", tags=tags)
        run_id = run.info.run_id
        client.log_batch(run_id, params=[Param(k, param_text(v)) for k, v in settings.items()])
    client.set_tag(run_id, OUTCOME_TAG, f"failed: {why}"[:5000])
    client.set_terminated(run_id, status="FAILED")


def short_error(exc: BaseException | str | None) -> str:
    """The user's error inside Ray's wrappers, on one line: `TrainingError: the train split has ...`.

    A string is a traceback's last line (`steep.pipeline.training.TrainingError: ...`): the module goes.
    """
    if exc is None:
        return "unknown error"
    if isinstance(exc, str):
        name, sep, message = exc.strip().partition(": ")
        return (f"{name.rsplit('.', 1)[-1]}{sep}{message}" if " " not in name else exc.strip())[:500]
    seen = set()
    while id(exc) not in seen:  # RayTaskError(...).cause is the trial's own exception
        seen.add(id(exc))
        inner = getattr(exc, "cause", None)
        if not isinstance(inner, BaseException):
            break
        exc = inner
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()[:500]


def param_text(value: Any) -> str:
    """A setting as an MLflow param (a string): lists and mappings as JSON."""
    return json.dumps(value) if isinstance(value, list | dict) else str(value)
