"""`steep tune`: a hyperparameter search on Ray Tune over training and decoding settings, judged on the
validation split only (the test split stays untouched for the gate).

Read `tune` top to bottom: plan the space (every value it can take checked against the config before any
trial runs) -> a parent MLflow run -> Ray (the stack's, else a local one) -> Ray Tune: each trial is one Ray
task (`run_trial`) that trains in its own process (steep.pipeline.training.train with training.workers=0,
recorded as a child run), reports the validation loss at each epoch's end (ASHA stops the worse half of the
trials at epochs 1, 2, 4, ...), then generates on the validation split with its decoding settings and
reports ROUGE -> the best finished trial on the gate metric (`evaluation.metric`) -> its settings as a
steep.yaml overlay (the user's own file is never written) and, on the parent run, the table of trials, a
plot and the overlay. A failed trial is reported and the search goes on; when no trial finishes there is an
error and no overlay.

Ray is imported inside the functions that use it: `ray.tune` imports `ray.train`, which must come after
RAY_TRAIN_V2_ENABLED is set (as in steep.pipeline.training).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import logging
import math
import os
import random
import re
import shlex
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import mlflow
import pandas as pd
import yaml
from mlflow.entities import Metric, Param
from pydantic import ValidationError

from steep import heartbeat, tracking
from steep.config import Distribution, SteepConfig, _format_errors, parse_duration
from steep.data import Splits, frame_digest
from steep.errors import SteepError
from steep.pipeline import training
from steep.pipeline.evaluation import decoding
from steep.quiet import quiet_third_parties
from steep.ray_jobs import tune_trial
from steep.registry import METRIC_LABELS

KIND_TAG = "steep.kind"  # "tune" on the parent run
TRIAL_TAG = "steep.tune.trial_id"  # Ray Tune's trial id, on each child run
OUTCOME_TAG = "steep.tune.outcome"  # finished / stopped: why / failed: why
SCORED_TAG = "steep.tune.scored_split_digest"  # the digest of the rows the trial generated on and scored
GENERATED_TAG = "steep.tune.generated_texts_sha256"  # of the texts its generation was given
OVERLAY_MARK = "# steep tune overlay"  # the first line of every file `steep tune` writes
SIGNIFICANT_DIGITS = 4  # sampled numbers are rounded to this before a trial uses them

Status = Literal["finished", "stopped", "failed"]


class TuneError(SteepError):
    """The search cannot start, or no trial finished; the message says why and what to change."""


# --------------------------------------------------------------------------------------------- space
def get_path(data: dict[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        node = node[part]
    return node


def set_path(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def settle(value: Any) -> Any:
    """A sampled float rounded to 4 significant digits (what the trial then uses, and the overlay says)."""
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return value


@dataclass(frozen=True)
class SpacePlan:
    """The validated search space and the base config's own value of each of its keys."""

    space: dict[str, Distribution]
    defaults: dict[str, Any]

    @property
    def keys(self) -> list[str]:
        return list(self.space)

    def max_epochs(self, base_epochs: int) -> int:
        """The most epochs a trial may train: where ASHA's rungs end."""
        dist = self.space.get("training.epochs")
        if dist is None:
            return base_epochs
        values = dist.choice if dist.kind == "choice" else dist.args
        return max(1, int(max(v for v in values if isinstance(v, int | float))))

    def distinct_points(self, trials: int, include_defaults: bool, seed: int) -> list[dict[str, Any]] | None:
        """A space of choices only is drawn without repeats: up to `trials` distinct settings in a seeded
        order, the config's own first (with tune.include_defaults). None when a key is a range: Ray Tune
        samples those."""
        if any(dist.kind != "choice" for dist in self.space.values()):
            return None
        values = itertools.product(*(list(dist.args) for dist in self.space.values()))
        combos = [dict(zip(self.keys, combo, strict=True)) for combo in values]
        random.Random(seed).shuffle(combos)
        first = [dict(self.defaults)] if include_defaults else []
        return (first + [c for c in combos if c not in first])[:trials]

    def domains(self) -> dict[str, Any]:
        """The space as Ray Tune samples it (randint's high end included, as the config says)."""
        from ray import tune

        make = {
            "choice": lambda a: tune.choice(list(a)),
            "uniform": lambda a: tune.uniform(*a),
            "loguniform": lambda a: tune.loguniform(*a),
            "randint": lambda a: tune.randint(a[0], a[1] + 1),
        }
        return {key: make[dist.kind](dist.args) for key, dist in self.space.items()}


def plan_space(cfg: SteepConfig) -> SpacePlan:
    """`tune.space` checked value by value against the rest of the config, before any trial runs.

    Every choice, both ends of a range and (for uniform / loguniform) a number between them are set into
    the config one at a time and validated as steep.yaml would be: a value the config refuses is an error
    naming the key, the value and the rule, not a failed trial an hour in. Combinations of values are not
    checked here (a trial they break fails and is reported).
    """
    space = cfg.tune.space
    if not space:
        raise TuneError("tune.space is empty: name at least one key to search, e.g. training.learning_rate")
    base = cfg.model_dump(mode="json")
    problems = [problem for key, dist in space.items() for problem in _check_values(base, key, dist)]
    if problems:
        raise TuneError("tune.space: values the config would refuse:\n  " + "\n  ".join(problems))
    return SpacePlan(dict(space), {key: get_path(base, key) for key in space})


def _check_values(base: dict[str, Any], key: str, dist: Distribution) -> list[str]:
    if dist.kind == "choice":
        values = list(dist.choice or [])
    else:
        low, high = dist.args
        values = [low, high]
        if dist.kind != "randint":  # a number between: a key of whole numbers refuses it
            values.append(settle(low + (high - low) * 0.381966))
    problems = []
    for value in values:
        data = copy.deepcopy(base)
        set_path(data, key, value)
        try:
            SteepConfig.model_validate(data)
        except ValidationError as exc:
            why = _format_errors(exc).splitlines()[0]
            if dist.kind in ("uniform", "loguniform") and isinstance(get_path(base, key), int):
                why += f" ({key} takes whole numbers: use choice or randint)"
            problems.append(f"{key}: {dist.kind} {list(dist.args)} can give {value!r}, refused: {why}")
            break  # one refused value per key says enough
    return problems


# --------------------------------------------------------------------------------------------- a trial
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
        client.log_batch(run_id, params=[Param(k, _param(v)) for k, v in settings.items()])
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


def _param(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


# --------------------------------------------------------------------------------------------- outcomes
@dataclass
class TrialOutcome:
    """A trial as the search ended it."""

    index: int
    trial_id: str
    settings: dict[str, Any]
    status: Status
    seconds: float = 0.0
    val_score: float | None = None  # the gate metric on the validation split, 0-1
    scores: dict[str, float] = field(default_factory=dict)  # val_rouge1/2/L, val_length_ratio
    val_losses: list[dict[str, float]] = field(default_factory=list)  # epoch, step, val_loss per epoch
    run_id: str | None = None
    reason: str = ""  # why it stopped or failed
    is_defaults: bool = False
    node: str = ""

    @property
    def val_loss(self) -> float | None:
        return self.val_losses[-1]["val_loss"] if self.val_losses else None


def best_trial(outcomes: Sequence[TrialOutcome]) -> TrialOutcome | None:
    """The finished trial with the highest validation score (ties: the lower validation loss, then the
    earlier trial); None when no trial finished."""
    finished = [o for o in outcomes if o.status == "finished" and o.val_score is not None]
    if not finished:
        return None

    def rank(o: TrialOutcome) -> tuple[float, float, int]:
        loss = o.val_loss if o.val_loss is not None and math.isfinite(o.val_loss) else math.inf
        return (-(o.val_score or 0.0), loss, o.index)

    return min(finished, key=rank)


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """`training.lora.r` -> `lora.r`: the section dropped where that stays unambiguous."""
    short = {k: k.split(".", 1)[1] if "." in k else k for k in keys}
    clashes = {s for s in short.values() if list(short.values()).count(s) > 1}
    return {k: k if s in clashes else s for k, s in short.items()}


def describe(settings: dict[str, Any], names: dict[str, str]) -> str:
    return " ".join(f"{names.get(k, k)}={_shown(v)}" for k, v in settings.items())


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def progress_line(outcome: TrialOutcome, total: int, names: dict[str, str], metric: str) -> str:
    """One line per finished trial: which, how it ended, its settings, validation loss and score, time."""
    head = f"trial {outcome.index}/{total}"
    settings = describe(outcome.settings, names) + (" (the defaults)" if outcome.is_defaults else "")
    where = f" on {outcome.node}" if outcome.node else ""
    took = f"{outcome.seconds:.0f} s{where}"
    loss = f"val loss {outcome.val_loss:.3f}" if outcome.val_loss is not None else "no val loss"
    if outcome.status == "finished":
        score = (outcome.val_score or 0.0) * 100
        return f"{head} finished in {took}: {settings} | {loss} | val {METRIC_LABELS[metric]} {score:.2f}"
    if outcome.status == "stopped":
        return f"{head} {outcome.reason} after {took}: {settings} | {loss}"
    return f"{head} failed after {took}: {settings} | {outcome.reason}"


# --------------------------------------------------------------------------------------------- overlay
def overlay_settings(outcome: TrialOutcome, plan: SpacePlan) -> dict[str, Any]:
    """The tuned keys only, in the order of the space, with the values the trial ran."""
    return {key: outcome.settings[key] for key in plan.keys if key in outcome.settings}


def overlay_yaml(settings: dict[str, Any], header: Sequence[str]) -> str:
    """A steep.yaml overlay: a comment header, then the settings as nested sections."""
    nested: dict[str, Any] = {}
    for key, value in settings.items():
        set_path(nested, key, value)
    body = yaml.safe_dump(nested, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return "".join(f"# {line}\n".replace("# \n", "#\n") for line in header) + body


def set_lines(settings: dict[str, Any]) -> list[str]:
    """The same settings as `--set key=value` arguments, quoted for a POSIX shell."""
    return [f"--set {shlex.quote(f'{key}={_set_value(value)}')}" for key, value in settings.items()]


def _set_value(value: Any) -> str:
    """A value `--set` reads back (as YAML) to the same thing: plain where it can be, else JSON."""
    if isinstance(value, str) and yaml.safe_load(value) == value:
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)


def check_output(output: Path, config_files: Sequence[Path]) -> Path:
    """Where the overlay goes: never one of the config files this tune read, never a file steep tune did
    not write."""
    output = Path(output).expanduser().resolve()
    read = {Path(f).expanduser().resolve() for f in config_files}
    if output in read:
        raise TuneError(
            f"--output {output} is a config file this tune reads; steep tune never writes your config. "
            "Choose another file, e.g. --output tuned.yaml"
        )
    if output.is_dir():
        raise TuneError(f"--output {output} is a folder; name a file, e.g. {output / 'tuned.yaml'}")
    if output.exists():
        first = output.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
        if not first.startswith(OVERLAY_MARK):
            raise TuneError(
                f"--output {output} exists and was not written by steep tune: it is left as it is. "
                "Choose another file, or delete it first"
            )
    return output


# --------------------------------------------------------------------------------------------- the search
@dataclass
class TuneResult:
    parent_run_id: str
    parent_name: str
    metric: str
    outcomes: list[TrialOutcome]
    best: TrialOutcome
    defaults: TrialOutcome | None
    overlay: Path
    settings: dict[str, Any]
    set_lines: list[str]
    trials: int  # asked for
    seconds: float


def tune(
    cfg: SteepConfig,
    splits: Splits,
    *,
    output: Path,
    config_files: Sequence[Path] = (),
    tracking_uri: str | None = None,
    ray_address: str | None = None,
    log: Callable[[str], None] = print,
) -> TuneResult:
    """Search `tune.space` with `tune.trials` trials within `tune.time_budget`; write the best settings to
    `output` as an overlay of the config files (which are never written) and return the search's result.

    Trials run on the Ray at `ray_address` (a stack's), else on a local Ray started here; MLflow records go
    to `tracking_uri`, else the embedded store under project.home.
    """
    t0 = time.time()
    plan = plan_space(cfg)
    if splits.validation.empty:
        raise TuneError(
            "steep tune judges trials on the validation split, and it is empty: set data.split.validation "
            "(e.g. 0.1, taken from train) so that some documents are held out for it"
        )
    output = check_output(output, config_files)
    experiment_id = tracking.setup(cfg, tracking_uri)
    client = mlflow.MlflowClient()
    parent_id, parent_name = _start_parent(cfg, client, experiment_id, plan, splits)
    latest = training.latest_run(cfg)  # trials start runs: `steep train --resume` keeps meaning yours
    status = "FAILED"
    try:
        with heartbeat.Heartbeat(client, parent_id), training.RaySession(ray_address) as ray_session:
            node_cpus = ray_session.connect()
            threads = cfg.tune.cpus_per_trial or min(node_cpus)
            context = trial_context(
                cfg, splits, tracking_uri=tracking_uri, parent_run_id=parent_id, parent_name=parent_name,
                threads=threads,
            )  # fmt: skip
            client.log_param(parent_id, "tune.cpus_per_trial.resolved", str(threads))
            outcomes = _search(cfg, plan, context, multi_node=len(node_cpus) > 1, log=log)
        _close_children(client, experiment_id, parent_id, outcomes)
        best = best_trial(outcomes)
        if best is None:
            raise TuneError(_nothing_finished(outcomes, cfg))
        defaults = next((o for o in outcomes if o.is_defaults), None)
        settings = overlay_settings(best, plan)
        header = _header(cfg, best, defaults, outcomes, parent_id, parent_name, config_files, output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(overlay_yaml(settings, header), encoding="utf-8")
        _log_parent(cfg, client, parent_id, outcomes, best, defaults, settings, output)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        client.set_terminated(parent_id, status=status)
        _restore_latest(cfg, latest)
    return TuneResult(
        parent_run_id=parent_id, parent_name=parent_name, metric=cfg.evaluation.metric, outcomes=outcomes,
        best=best, defaults=defaults, overlay=output, settings=settings, set_lines=set_lines(settings),
        trials=len(outcomes), seconds=time.time() - t0,
    )  # fmt: skip


def _start_parent(
    cfg: SteepConfig, client: Any, experiment_id: str, plan: SpacePlan, splits: Splits
) -> tuple[str, str]:
    """The parent run: how the search is set up (space, budget, data digests of train and validation)."""
    name = f"{cfg.project.name}-tune-{time.strftime('%Y%m%d-%H%M%S')}"
    tags = {
        **tracking.system_info(),
        KIND_TAG: "tune",
        "mlflow.note.content": "the trials are its child runs",
    }
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    t = cfg.tune
    params = {
        "tune.trials": str(t.trials), "tune.time_budget": t.time_budget,
        "tune.early_stopping": str(t.early_stopping), "tune.include_defaults": str(t.include_defaults),
        "evaluation.metric": cfg.evaluation.metric,
        "model.source": cfg.model.source,
        **{f"tune.space.{k}": json.dumps(d.model_dump(mode="json")) for k, d in plan.space.items()},
        **{f"data.digest.{k}": v for k, v in splits.digests.items() if k in ("train", "validation")},
    }  # fmt: skip
    items = [Param(k, v[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[start : start + 100])
    return run.info.run_id, name


@contextlib.contextmanager
def _quiet_tune() -> Iterator[None]:
    """Steep prints one line per trial: no Tune tables, and no Tune log lines (a failed trial's traceback
    is in its error file and its child run). A level the user set on `ray.tune` stays."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic reporter, which a silent one replaces
    logger = logging.getLogger("ray.tune")
    before = logger.level
    if before == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


def _search(
    cfg: SteepConfig, plan: SpacePlan, context: TrialContext, *, multi_node: bool, log: Callable[[str], None]
) -> list[TrialOutcome]:
    """Ray Tune over the plan; -> each trial's outcome, in trial order."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")  # read when ray.train is imported (by ray.tune)
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    t = cfg.tune
    budget = parse_duration(t.time_budget)
    distinct = plan.distinct_points(t.trials, t.include_defaults, cfg.project.seed)
    points = distinct if distinct is not None else [dict(plan.defaults)] if t.include_defaults else []
    total = len(distinct) if distinct is not None else t.trials
    if total < t.trials:
        log(f"tune.space holds {total} distinct settings: {total} trials, not {t.trials}")
    names = short_keys(plan.keys)
    stopped: dict[str, int] = {}  # trial id -> the epoch ASHA stopped it at
    seconds: dict[str, float] = {}
    shown: dict[str, TrialOutcome] = {}
    started = time.time()

    def outcome_of(trial: Any, error: bool) -> TrialOutcome:
        return _outcome(
            trial.trial_id, trial.config, trial.last_result or {}, seconds.get(trial.trial_id, 0.0),
            error=_trial_error(trial) if error else None, stopped=stopped, plan=plan,
            budget_hit=time.time() - started >= budget, show_node=multi_node, defaults=t.include_defaults,
        )  # fmt: skip

    class Lines(tune.Callback):
        """One line per finished trial, as it finishes."""

        def __reduce__(self) -> tuple:  # Tune saves its callbacks with the experiment: the lines stay here
            return (tune.Callback, ())

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            seconds[trial.trial_id] = -time.time()

        def _done(self, trial: Any, error: bool) -> None:
            seconds[trial.trial_id] = seconds.get(trial.trial_id, -time.time()) + time.time()
            outcome = outcome_of(trial, error)
            shown[trial.trial_id] = outcome
            log(progress_line(outcome, total, names, cfg.evaluation.metric))

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._done(trial, error=False)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._done(trial, error=True)

    class Silent(tune.ProgressReporter):
        def should_report(self, trials: list, done: bool = False) -> bool:
            return False

        def report(self, trials: list, done: bool, *sys_info: Any) -> None:
            return None

    searcher = BasicVariantGenerator(points_to_evaluate=points, random_state=cfg.project.seed)
    resources = {"cpu": context.threads, "gpu": 1 if cfg.training.use_gpu else 0}
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), resources)
    max_epochs = plan.max_epochs(cfg.training.epochs)
    scheduler = (
        _asha(max_epochs, stopped, defaults=t.include_defaults, base_epochs=cfg.training.epochs)
        if t.early_stopping
        else None
    )
    tuner = tune.Tuner(
        trainable,
        param_space=plan.domains(),
        tune_config=tune.TuneConfig(
            num_samples=total, search_alg=searcher, scheduler=scheduler, time_budget_s=budget
        ),
        run_config=tune.RunConfig(
            name=context.parent_name,
            storage_path=str((cfg.home / "tune").resolve()),
            verbose=0,
            progress_reporter=Silent(),
            callbacks=[Lines()],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        ),
    )
    with _quiet_tune():
        grid = tuner.fit()
    outcomes = []
    for result in grid:
        trial_id = (result.metrics or {}).get("trial_id") or _trial_id(result.path)
        outcome = shown.get(trial_id) or _outcome(  # one the callback never saw end (the budget ran out)
            trial_id, result.config or {}, result.metrics or {}, 0.0, error=result.error, stopped=stopped,
            plan=plan, budget_hit=True, show_node=multi_node, defaults=t.include_defaults,
        )  # fmt: skip
        if result.error is not None:  # the grid has the exception itself
            outcome.status, outcome.reason = "failed", short_error(result.error)
        history = result.metrics_dataframe
        if history is not None and {"val_loss", "epoch", "step"} <= set(history.columns):
            rows = history.dropna(subset=["val_loss", "epoch"]).drop_duplicates("epoch", keep="first")
            outcome.val_losses = rows[["epoch", "step", "val_loss"]].astype(float).to_dict("records")
        outcomes.append(outcome)
    return sorted(outcomes, key=lambda o: o.index)


def _trial_error(trial: Any) -> BaseException | str:
    """A failed trial's error as Tune has it when it calls back: the pickled exception once it is in the
    experiment's storage, before that the last line of its error file."""
    found = trial.get_pickled_error()
    if found is not None:
        return found
    path = Path(trial.error_file) if trial.error_file else None
    lines = (
        [line for line in path.read_text().splitlines() if line.strip()] if path and path.is_file() else []
    )
    return lines[-1] if lines else "failed (see the trial's error file under project.home/tune)"


def _trial_id(path: str | None) -> str:
    """A trial's id from its folder name (`run_trial_1a2b3_00004_4_...`), for a trial that never reported."""
    found = re.search(r"_([0-9a-f]{5}_\d{5})_", Path(path).name) if path else None
    return found.group(1) if found else ""


def _asha(max_epochs: int, stopped: dict[str, int], defaults: bool, base_epochs: int) -> Any:
    """ASHA on the validation loss against epochs trained; records which trials it stopped, and where.

    A trial that has trained its last epoch (its `training.epochs`, else `base_epochs`) is never stopped:
    only its generation is left, and the loss does not rank ROUGE (a trial behind on loss may win). The
    defaults' trial (trial 1 with tune.include_defaults) counts in every rung but is never stopped: it is
    the score the others are measured against.
    """
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class RecordingASHA(ASHAScheduler):
        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            action = super().on_trial_result(tune_controller, trial, result)
            if action == TrialScheduler.STOP and defaults and trial_index(trial.trial_id) == 1:
                return TrialScheduler.CONTINUE
            last = trial.config.get("training.epochs", base_epochs)
            if action == TrialScheduler.STOP and int(result.get("epoch", 0)) >= int(last):
                return TrialScheduler.CONTINUE
            if action == TrialScheduler.STOP and "val_score" not in result:
                stopped[trial.trial_id] = int(result.get("epoch", 0))
            return action

    return RecordingASHA(
        time_attr="epoch", metric="val_loss", mode="min", max_t=max(1, max_epochs), grace_period=1,
        reduction_factor=2, stop_last_trials=False,
    )  # fmt: skip


def _outcome(
    trial_id: str, config: dict[str, Any], last: dict[str, Any], seconds: float, *, error: Any,
    stopped: dict[str, int], plan: SpacePlan, budget_hit: bool, show_node: bool, defaults: bool,
) -> TrialOutcome:  # fmt: skip
    """A trial's outcome from its last result: finished (scored), stopped (by ASHA or the budget), failed."""
    index = trial_index(trial_id)
    settings = {key: settle(config[key]) for key in plan.keys if key in config}
    outcome = TrialOutcome(
        index=index, trial_id=trial_id, settings=settings, status="finished",
        seconds=seconds or float(last.get("time_total_s") or 0.0), run_id=last.get("run_id"),
        is_defaults=defaults and index == 1,  # points_to_evaluate come first: the defaults are trial 1
        node=str(last.get("node", "")) if show_node else "",
    )  # fmt: skip
    if last.get("val_loss") is not None and last.get("epoch") is not None:
        outcome.val_losses = [{k: float(last.get(k) or 0.0) for k in ("epoch", "step", "val_loss")}]
    if error is not None:
        outcome.status, outcome.reason = "failed", short_error(error)
    elif last.get("val_score") is not None:
        outcome.val_score = float(last["val_score"])
        outcome.scores = {
            k: float(last[k]) for k in last if k.startswith("val_rouge") or k == "val_length_ratio"
        }
    elif trial_id in stopped:
        outcome.status = "stopped"
        outcome.reason = (
            f"stopped early at epoch {stopped[trial_id]} (ASHA: its val loss was in the worse half)"
        )
    else:
        outcome.status = "stopped"
        outcome.reason = "stopped by the time budget" if budget_hit else "stopped before it was scored"
    return outcome


def _close_children(
    client: Any, experiment_id: str, parent_id: str, outcomes: Sequence[TrialOutcome]
) -> None:
    """Child runs of trials that were stopped (their process ended mid-run): KILLED with the reason, and
    any validation loss Tune received that the run missed logging."""
    runs = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=1000)
    by_trial = {r.data.tags.get(TRIAL_TAG): r for r in runs}
    for outcome in outcomes:
        run = by_trial.get(outcome.trial_id)
        if run is None:
            continue
        outcome.run_id = outcome.run_id or run.info.run_id
        if outcome.status != "stopped":
            continue
        run_id = run.info.run_id
        known = {m.step for m in client.get_metric_history(run_id, "val_loss")}
        now = int(time.time() * 1000)
        missing = [
            Metric("val_loss", row["val_loss"], now, int(row["step"]))
            for row in outcome.val_losses
            if int(row["step"]) not in known
        ]
        if missing:
            client.log_batch(run_id, metrics=missing)
        client.set_tag(run_id, OUTCOME_TAG, outcome.reason)
        client.set_terminated(run_id, status="KILLED")


def _nothing_finished(outcomes: Sequence[TrialOutcome], cfg: SteepConfig) -> str:
    if not outcomes:
        return (
            f"no trial ran within tune.time_budget={cfg.tune.time_budget}; raise it (--time-budget) or "
            "make a trial shorter (training.max_steps, fewer epochs). No overlay written"
        )
    lines = [f"  trial {o.index}: {o.status}: {o.reason}" for o in outcomes]
    return (
        f"none of the {len(outcomes)} trials finished, so there is no best setting and no overlay was "
        "written:\n" + "\n".join(lines)
    )


def _header(
    cfg: SteepConfig, best: TrialOutcome, defaults: TrialOutcome | None, outcomes: Sequence[TrialOutcome],
    parent_id: str, parent_name: str, config_files: Sequence[Path], output: Path,
) -> list[str]:  # fmt: skip
    label = METRIC_LABELS[cfg.evaluation.metric]
    finished = sum(o.status == "finished" for o in outcomes)
    if defaults is None:
        versus = "the defaults did not run (tune.include_defaults is off)"
    elif defaults.status != "finished":
        versus = f"the defaults (trial {defaults.index}) did not finish: {defaults.status}"
    elif defaults is best:
        versus = f"the defaults (trial {defaults.index}) were the best: nothing beat them"
    else:
        versus = f"the defaults (trial {defaults.index}) scored {(defaults.val_score or 0) * 100:.2f}"
    base = Path(config_files[0]).name if config_files else "steep.yaml"
    return [
        f"{OVERLAY_MARK[2:]}: the settings of the best of {len(outcomes)} trials ({finished} finished),",
        f"chosen on the validation split only ({label}); the test split was not used.",
        f"best: trial {best.index} (MLflow run {best.run_id})",
        f"tune run: {parent_name} (MLflow run {parent_id}); every trial is a child run of it",
        f"validation {label} {(best.val_score or 0) * 100:.2f}; {versus}",
        f"use: steep run -c {base} -c {output.name}   (later files win; {base} itself is unchanged)",
        "",
    ]


def _log_parent(
    cfg: SteepConfig, client: Any, parent_id: str, outcomes: Sequence[TrialOutcome], best: TrialOutcome,
    defaults: TrialOutcome | None, settings: dict[str, Any], output: Path,
) -> None:  # fmt: skip
    """The best settings, the counts, the table of trials, the plot and the overlay, on the parent run."""
    metric = cfg.evaluation.metric
    now = int(time.time() * 1000)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("finished", "stopped", "failed")}
    metrics = {f"best_val_{metric}": best.val_score or 0.0, **{f"trials_{k}": v for k, v in counts.items()}}
    if defaults is not None and defaults.val_score is not None:
        metrics[f"defaults_val_{metric}"] = defaults.val_score
    client.log_batch(
        parent_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        params=[Param(f"best.{k}", _param(v)[:6000]) for k, v in settings.items()],
    )
    client.set_tag(parent_id, "steep.tune.best_trial", str(best.index))
    client.set_tag(parent_id, "steep.tune.best_run_id", str(best.run_id))
    client.log_table(parent_id, trials_table(outcomes), "tune/trials.json")
    with tempfile.TemporaryDirectory() as tmp:
        plot = trials_plot(outcomes, metric, Path(tmp) / "tune_trials.png", best=best)
        client.log_artifact(parent_id, str(plot), "tune")
        client.log_artifact(parent_id, str(output), "tune")


def trials_table(outcomes: Sequence[TrialOutcome]) -> pd.DataFrame:
    rows = []
    for o in outcomes:
        rows.append({
            "trial": o.index, "status": o.status, "reason": o.reason, "seconds": round(o.seconds, 1),
            "val_loss": o.val_loss, "val_score": o.val_score, **o.scores,
            **{k: _param(v) for k, v in o.settings.items()}, "run_id": o.run_id, "defaults": o.is_defaults,
        })  # fmt: skip
    return pd.DataFrame(rows)


def trials_plot(outcomes: Sequence[TrialOutcome], metric: str, path: Path, best: TrialOutcome | None) -> Path:
    """Left: each trial's validation score (the best in green; stopped and failed ones marked). Right: the
    validation loss at each epoch's end, per trial: what the early stopping saw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for o in outcomes:
        if o.status == "finished" and o.val_score is not None:
            color = "tab:green" if o is best else ("tab:orange" if o.is_defaults else "tab:blue")
            left.bar(o.index, o.val_score * 100, color=color)
            left.annotate(f"{o.val_score * 100:.1f}", (o.index, o.val_score * 100), ha="center",
                          va="bottom", fontsize=7)  # fmt: skip
        else:
            mark = "x" if o.status == "failed" else "|"
            left.plot([o.index], [0], marker=mark, color="tab:red" if o.status == "failed" else "tab:gray")
            left.annotate(o.status, (o.index, 0), textcoords="offset points", xytext=(0, 6), ha="center",
                          fontsize=7, rotation=90)  # fmt: skip
        if o.val_losses:
            epochs = [row["epoch"] for row in o.val_losses]
            losses = [row["val_loss"] for row in o.val_losses]
            style = "-" if o.status == "finished" else ":"
            right.plot(epochs, losses, style, marker="o", label=f"trial {o.index}")
    left.set_xlabel("trial")
    left.set_ylabel(f"validation {METRIC_LABELS[metric]} (F1 x 100)")
    left.set_title("best in green, the defaults in orange", fontsize=9)
    left.set_xticks([o.index for o in outcomes])
    left.set_ylim(bottom=0)
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlabel("epoch")
    right.set_ylabel("validation loss per summary token")
    right.set_title("dotted: stopped before it was scored", fontsize=9)
    if any(o.val_losses for o in outcomes):
        right.legend(fontsize=7, frameon=False)
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _restore_latest(cfg: SteepConfig, latest: str | None) -> None:
    """The trials' runs are not what `steep train --resume` should pick up: the marker goes back."""
    marker = training.runs_root(cfg) / training.LATEST_FILE
    if latest is not None:
        marker.write_text(latest)
    elif marker.exists():
        marker.unlink()
