"""Fine-tuning as a plain function: `train(cfg, splits)` -> TrainResult.

The driver checks everything it can before anything is recorded (model found, LoRA targets exist, data
big enough for a batch), tokenizes once, runs ray_jobs/train.py on a Ray TorchTrainer (or in-process with
workers=0), streams per-step metrics to MLflow and a progress bar off the training path, then logs the
loss curve and the trained model as a pyfunc. A failed run is marked FAILED and logs no model.

Read `train` top to bottom: prepare -> start or resume the MLflow run -> connect to Ray -> fit with a
progress bar -> keep the final checkpoint -> log the model and the run's metrics; a failure on the way
marks the run and becomes a TrainingError where the user can fix it. Ray is imported where it is used:
`ray.train` must come after RAY_TRAIN_V2_ENABLED is set (`_fit`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.entities import Metric, Param

from steep import heartbeat, logged_model, models, tracking
from steep.config import SteepConfig
from steep.data import Splits
from steep.errors import SteepError
from steep.pipeline.placement import (
    PLACEMENT_WAIT_ENV,
    PlacementWait,
    failure_budgets,
    placement_message,
    placement_waits,
)
from steep.pipeline.ray_session import RaySession
from steep.pipeline.training_progress import RayQueueSink, TrainingProgress, loss_plot
from steep.ray_jobs.checkpoints import MODEL_DIR, STATE_FILE
from steep.ray_jobs.train import BatchTooLargeError, oom_message, train_loop_per_worker
from steep.ray_jobs.worker_config import FAULT_ENV, WorkerConfig

RUNS_DIR = "runs"
LATEST_FILE = "latest"


class TrainingError(SteepError):
    """Training cannot start or did not finish, for a reason the user can act on."""


@dataclass
class TrainResult:
    run_id: str
    run_name: str
    model_uri: str | None
    checkpoint_path: str
    model_dir: str
    base_model_dir: str
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from_step: int = 0
    timing: dict[str, float] = field(default_factory=dict)  # total_s, startup_s, steps_s, after_s
    validation: list[dict[str, float]] = field(default_factory=list)  # step, epoch, val_loss per epoch


# --------------------------------------------------------------------------------------------- preflight
@dataclass
class Prepared:
    model_dir: Path
    kind: models.Kind
    fmt: models.PromptFormat
    examples: list[dict[str, list[int]]]
    tokens: int
    validation: list[dict[str, list[int]]] = field(default_factory=list)  # with training.validation_loss


def prepare(cfg: SteepConfig, splits: Splits) -> Prepared:
    """Everything that can fail on user input, before a run is recorded: model, targets, data size."""
    model_dir = models.resolve_model(cfg)
    kind = models.model_kind(model_dir, cfg.model.kind)
    _check_targets(cfg, model_dir, kind)
    if cfg.training.attention == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise TrainingError(
            "training.attention=flash_attention_2 needs the flash-attn package on every training node "
            "(`pip install flash-attn`, CUDA only); or use sdpa, or flex_attention on GPU"
        )
    if cfg.training.packing and kind != "causal":
        raise TrainingError(
            f"training.packing needs a causal (decoder-only) model; {cfg.model.source} is {kind}. "
            "Set training.packing: false."
        )
    train = splits.train
    needed = max(cfg.training.batch_size, cfg.training.workers, 1)
    if len(train) < needed:
        raise TrainingError(
            f"the train split has {len(train)} row(s), fewer than "
            f"training.batch_size={cfg.training.batch_size}"
            f"{f' / training.workers={cfg.training.workers}' if cfg.training.workers > 1 else ''}. "
            "Lower training.batch_size, or give the split more data (data.split.train, more rows)."
        )
    if cfg.training.workers > cfg.training.batch_size:
        raise TrainingError(
            f"training.batch_size={cfg.training.batch_size} is split over training.workers="
            f"{cfg.training.workers}: each worker needs at least one example. "
            "Raise batch_size or lower workers."
        )
    tokenizer = models.load_tokenizer(model_dir, kind)
    fmt = models.PromptFormat.from_config(cfg.model, kind)
    encoder = models.Encoder(tokenizer, fmt)
    examples = [encoder.example(t, s) for t, s in zip(train["text"], train["summary"], strict=True)]
    tokens = sum(models.example_tokens(e, kind) for e in examples)
    held_out = splits.validation if cfg.training.validation_loss else splits.validation.head(0)
    validation = [encoder.example(t, s) for t, s in zip(held_out["text"], held_out["summary"], strict=True)]
    return Prepared(model_dir, kind, fmt, examples, tokens, validation)


def _check_targets(cfg: SteepConfig, model_dir: Path, kind: models.Kind) -> None:
    """LoRA targets against the model's layer names, on a weightless (meta) copy: no memory, no load time."""
    if cfg.training.method != "lora" or cfg.training.lora.target_modules == "all-linear":
        return
    # transformers' auto classes are slow to import, and only a list of targets needs them here
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForCausalLM if kind == "causal" else AutoModelForSeq2SeqLM
    with torch.device("meta"):
        skeleton = auto.from_config(AutoConfig.from_pretrained(model_dir))
    models.check_target_modules(skeleton, cfg.training.lora.target_modules)


# --------------------------------------------------------------------------------------------- run state
def runs_root(cfg: SteepConfig) -> Path:
    return (cfg.home / RUNS_DIR).resolve()


def _run_state(cfg: SteepConfig, name: str) -> Path:
    return runs_root(cfg) / name / "run.json"


def new_run_name(cfg: SteepConfig) -> str:
    return f"{cfg.project.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def run_recorded(cfg: SteepConfig, run_name: str) -> bool:
    """Whether a training run of that name was started here (`train(resume=True)` can continue it)."""
    return _run_state(cfg, run_name).is_file()


def latest_run(cfg: SteepConfig) -> str | None:
    marker = runs_root(cfg) / LATEST_FILE
    return marker.read_text().strip() if marker.is_file() else None


def _ray_oom_types() -> tuple[type[BaseException], ...]:
    try:
        from ray.exceptions import OutOfMemoryError

        return (OutOfMemoryError,)
    except ImportError:
        return ()


def _user_error(exc: BaseException, wanted: tuple[type[BaseException], ...]) -> BaseException | None:
    """Find a worker's user-fixable error inside Ray's TrainingFailedError wrappers and exception chains."""
    todo, seen = [exc], set()
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, wanted):
            return current
        failures = getattr(current, "worker_failures", None)
        if isinstance(failures, dict):
            todo.extend(f for f in failures.values() if isinstance(f, BaseException))
        linked_ones = (current.__cause__, current.__context__, getattr(current, "cause", None),
                       getattr(current, "controller_failure", None))  # fmt: skip
        for linked in linked_ones:
            if isinstance(linked, BaseException):
                todo.append(linked)
    return None


def _translate_error(exc: BaseException, cfg: SteepConfig) -> TrainingError | None:
    """The TrainingError for a failure the user can fix (bad input, a batch too large), else None."""
    found = _user_error(exc, (BatchTooLargeError, SteepError))
    if found is not None:
        return TrainingError(str(found))
    if _user_error(exc, _ray_oom_types()) is not None:  # Ray's memory monitor killed a worker first
        return TrainingError(oom_message(cfg.training.batch_size, max(1, cfg.training.workers)))
    if _user_error(exc, _placement_timeout_types()) is not None:
        return TrainingError(placement_message(cfg))
    return None


def _placement_timeout_types() -> tuple[type[BaseException], ...]:
    try:
        from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

        return (WorkerGroupStartupTimeoutError,)
    except ImportError:
        return ()


# --------------------------------------------------------------------------------------------- train
def train(
    cfg: SteepConfig,
    splits: Splits,
    *,
    tracking_uri: str | None = None,
    ray_address: str | None = None,
    resume: bool = False,
    run_name: str | None = None,
    progress: bool = False,
    checkpoint_storage: str | None = None,
    tags: dict[str, str] | None = None,
    log_model: bool = True,
) -> TrainResult:
    """Fine-tune cfg.model on splits.train with Ray Train and record it in MLflow.

    resume=True continues the latest run (or `run_name`) from its last checkpoint, in the same MLflow run.
    Ray checkpoints go under project.home, or `checkpoint_storage` (a path or URI every Ray node can reach,
    e.g. the stack's bucket) when the cluster is remote.
    STEEP_FAULT_AT_STEP=N in the environment crashes one worker once at step N: a drill of the restart.
    `tags` go on a new run (e.g. mlflow.parentRunId: `steep tune` records each trial as a child run);
    `log_model=False` logs no model (a tune trial's adapter stays in its checkpoint folder).
    """
    t0 = time.time()
    prepared = prepare(cfg, splits)  # everything that can fail on user input, before a run is recorded
    experiment_id = tracking.setup(cfg, tracking_uri)
    client = mlflow.MlflowClient()
    _close_dead_runs(client, experiment_id)  # a driver killed hard never said so: say it now
    heartbeat.reap_orphans()
    if resume:
        run_id, run_name = _resume_run(cfg, client, run_name)
    else:
        run_id, run_name = _start_run(cfg, client, experiment_id, run_name, tags)
        _log_params(client, run_id, cfg, splits, prepared)
    run_dir = runs_root(cfg) / run_name
    storage = f"{checkpoint_storage.rstrip('/')}/{run_name}" if checkpoint_storage else run_dir / "ray"
    logger = tracking.MetricLogger(run_id)
    total_tokens = prepared.tokens * cfg.training.epochs
    with heartbeat.Heartbeat(client, run_id), RaySession(ray_address) as ray_session:
        try:
            with tracking.finishing(client, run_id):  # FINISHED, or FAILED / KILLED with the error
                try:
                    events, job = _place_workers(cfg, prepared, ray_session, run_dir, storage, resume)
                    waiting = PlacementWait(cfg) if cfg.training.workers else None
                    with TrainingProgress(
                        events, logger, total_tokens, show=progress, waiting=waiting
                    ) as bar:
                        result = _fit(cfg, job, storage, run_name)
                finally:
                    logger.close()  # every step's metrics are in before the outputs and the run's end
                checkpoint_dir = _keep_checkpoint(result, run_dir / "final")
                model_uri = _log_outputs(cfg, run_id, prepared, checkpoint_dir, bar.history, log_model)
                metrics = _collect_metrics(bar)
                _log_summary(client, run_id, metrics, bar)
        except BaseException as exc:
            translated = _translate_error(exc, cfg)
            if translated is None:
                raise
            raise translated from exc
    return TrainResult(
        run_id=run_id, run_name=run_name, model_uri=model_uri, checkpoint_path=str(checkpoint_dir),
        model_dir=str(checkpoint_dir / MODEL_DIR), base_model_dir=str(prepared.model_dir),
        metrics=metrics, history=bar.history, resumed_from_step=bar.resumed_from, timing=_timing(t0, bar),
        validation=bar.validation,
    )  # fmt: skip


def _close_dead_runs(client: Any, experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of this experiment that stopped beating (steep.heartbeat)."""
    closed = []
    now = time.time()
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=100):
        died = heartbeat.dead_since("RUNNING", run.info.start_time / 1000, run.data.tags, now)
        if died is not None:
            client.set_tag(run.info.run_id, heartbeat.KILLED_TAG, heartbeat.killed_reason(died))
            client.set_terminated(run.info.run_id, status="KILLED", end_time=int(died * 1000))
            closed.append(run.info.run_id)
    return closed


def _resume_run(cfg: SteepConfig, client: Any, run_name: str | None) -> tuple[str, str]:
    """The run a dead driver left behind (`run_name`, else the latest), RUNNING again; -> (id, name)."""
    run_name = run_name or latest_run(cfg)
    if run_name is None or not _run_state(cfg, run_name).is_file():
        raise TrainingError(
            f"nothing to resume: no run recorded under {runs_root(cfg)}; run `steep train` first"
        )
    run_id = json.loads(_run_state(cfg, run_name).read_text())["run_id"]
    client.update_run(run_id, status="RUNNING")
    return run_id, run_name


def _start_run(
    cfg: SteepConfig,
    client: Any,
    experiment_id: str,
    run_name: str | None,
    tags: dict[str, str] | None = None,
) -> tuple[str, str]:
    """A new MLflow run, recorded under project.home so that `resume` finds it; -> (id, name)."""
    run_name = run_name or new_run_name(cfg)
    run = client.create_run(experiment_id, run_name=run_name, tags={**tracking.system_info(), **(tags or {})})
    run_id = run.info.run_id
    _run_state(cfg, run_name).parent.mkdir(parents=True, exist_ok=True)
    _run_state(cfg, run_name).write_text(json.dumps({"run_id": run_id, "run_name": run_name}))
    (runs_root(cfg) / LATEST_FILE).write_text(run_name)
    return run_id, run_name


def _log_params(client: Any, run_id: str, cfg: SteepConfig, splits: Splits, prepared: Prepared) -> None:
    """The resolved config, data digests and row count as params; the base model's folder as a tag."""
    params = tracking.flat_params(cfg)
    params.update({f"data.digest.{k}": v for k, v in splits.digests.items()})
    params.update({"model.kind.resolved": prepared.kind, "data.train_rows": str(len(prepared.examples))})
    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params in one batch
        client.log_batch(run_id, params=items[start : start + 100])
    client.set_tag(run_id, "steep.model_dir", str(prepared.model_dir))


def worker_config(cfg: SteepConfig, prepared: Prepared, run_dir: Path) -> WorkerConfig:
    """What every worker gets before placement: the config, the model, the tokenized examples, this
    process's threads, and the fault drill's step when STEEP_FAULT_AT_STEP asks for one."""
    fault = os.environ.get(FAULT_ENV)
    return WorkerConfig(
        cfg=cfg, model_dir=str(prepared.model_dir), kind=prepared.kind, prompt_format=prepared.fmt,
        examples=prepared.examples, validation_examples=prepared.validation, threads=torch.get_num_threads(),
        fault_at_step=int(fault) if fault else None, fault_marker=str(run_dir / "injected-failure"),
    )  # fmt: skip


def _place_workers(
    cfg: SteepConfig, prepared: Prepared, ray_session: RaySession, run_dir: Path, storage: Path | str,
    resume: bool,
) -> tuple[Any, WorkerConfig]:  # fmt: skip
    """Where the loop runs, in-process (workers=0) or on Ray; -> (the queue the driver reads events from,
    what every worker gets: the config, the model and the tokenized examples, the sink rank 0 puts events
    into, its threads, on resume a checkpoint). Workers tokenize nothing."""
    job = worker_config(cfg, prepared, run_dir)
    workers = cfg.training.workers
    if workers == 0:
        local_root = run_dir / "checkpoints"
        events: Any = queue.Queue()
        resume_from = _latest_local_checkpoint(local_root) if resume else None
        # Ray's local mode keeps no checkpoints: the loop writes them in place
        return events, replace(
            job, sink=events, local_checkpoint_root=str(local_root), resume_from=resume_from
        )
    strategy, threads = placement_plan(cfg.training.placement, workers, ray_session.connect())
    from ray.util.queue import Queue

    # the queue lives on the head: losing a worker node must not lose the run's progress
    events = Queue(actor_options={"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}})
    job = replace(job, sink=RayQueueSink(events), threads=threads, strategy=strategy)
    if resume and isinstance(storage, Path):  # Ray's storage is under project.home (no checkpoint_storage)
        # Ray restores what its controller had registered; a driver killed right after a worker
        # wrote a checkpoint leaves a newer one on disk, and the worker takes whichever is later
        job = replace(job, resume_from=_latest_local_checkpoint(storage / run_dir.name))
    return events, job


def placement_plan(placement: str, workers: int, node_cpus: list[int]) -> tuple[str, int]:
    """Ray's placement strategy for the workers and each worker's torch threads, from the nodes' CPUs.

    Spread (one worker per node, Ray's STRICT_SPREAD) is what a multi-node cluster is for: each worker gets
    a node's CPUs. Packed workers share a node's CPUs.
    """
    fits = len(node_cpus) >= workers
    if placement == "spread" and not fits:
        raise TrainingError(
            f"training.placement: spread needs a node for each of the {workers} workers, but the cluster "
            f"has {len(node_cpus)} node(s) with CPUs; add nodes (stack.local.ray_worker_nodes, "
            "stack.cpu_nodes) or set training.placement: auto"
        )
    if placement == "spread" or (placement == "auto" and fits and len(node_cpus) > 1):
        return "STRICT_SPREAD", max(1, min(sorted(node_cpus, reverse=True)[:workers]))
    return "PACK", max(1, sum(node_cpus) // workers)


def _collect_metrics(bar: TrainingProgress) -> dict[str, float]:
    """The run's numbers from the steps the progress consumer saw (a resumed run: the steps since)."""
    history = bar.history
    return {
        "loss": history[-1]["loss"] if history else float("nan"),
        "loss_first": history[0]["loss"] if history else float("nan"),
        "loss_last": history[-1]["loss"] if history else float("nan"),
        "tokens_per_s": bar.tokens_per_s,
        "steps": float(history[-1]["step"]) if history else 0.0,
    }


def _log_summary(client: Any, run_id: str, metrics: dict[str, float], bar: TrainingProgress) -> None:
    """Summary metrics (loss and tokens/s are per-step series already), the resolved precision, where the
    workers ran, and what restarts cost: how many, how many were spot reclaims, the steps trained twice."""
    summary = {k: v for k, v in metrics.items() if k not in ("loss", "tokens_per_s")}
    spot = {"restarts": bar.restarts, "preemptions": len(bar.preemptions), "steps_redone": bar.steps_redone}
    client.log_batch(
        run_id, metrics=_metrics({**summary, "mean_tokens_per_s": metrics["tokens_per_s"], **spot})
    )
    client.set_tag(run_id, "steep.precision", bar.precision)  # what `training.precision` resolved to
    if bar.starts:  # each rank's Ray node, as the last (re)start placed them
        client.set_tag(run_id, "steep.ray_nodes", json.dumps(bar.starts[-1]["nodes"]))
    if bar.preemptions:  # each notice: nodes, deadline, when it was seen and when its checkpoint was in
        client.set_tag(run_id, "steep.preemptions", json.dumps(bar.preemptions))


def _timing(t0: float, bar: TrainingProgress) -> dict[str, float]:
    """Where the wall time went: start-up (Ray, model load) before the first step, steps, logging after."""
    end = time.time()
    first = bar.first_step_start or end
    last = bar.last_step_end or end
    return {
        "total_s": end - t0,
        "startup_s": first - t0,
        "steps_s": bar.steps_seconds,
        "after_s": end - last,
    }


def _fit(cfg: SteepConfig, job: WorkerConfig, storage: Path | str, run_name: str) -> Any:
    """steep/ray_jobs/train.py on a TorchTrainer: N workers, or in the driver's own process for workers=0."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")  # read when ray.train is imported: just below
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    t = cfg.training
    # one round of waiting for placement: Ray Train's controller (started just below) reads it
    os.environ[PLACEMENT_WAIT_ENV] = str(placement_waits(t.placement_timeout)[0])
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=job.loop_config(),
        scaling_config=ScalingConfig(
            num_workers=t.workers, use_gpu=t.use_gpu, placement_strategy=job.strategy
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=str(storage),
            failure_config=FailureConfig(**failure_budgets(cfg)),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    return trainer.fit()


def _latest_local_checkpoint(root: Path) -> str | None:
    found = sorted(root.glob("checkpoint_*")) if root.is_dir() else []
    complete = [p for p in found if (p / "state.json").is_file()]
    return str(complete[-1]) if complete else None


def _keep_checkpoint(result: Any, dest: Path) -> Path:
    """Copy the final checkpoint out of Ray's storage: the run's model must outlive Ray's retention."""
    if result.checkpoint is None:
        raise TrainingError("training ended without a checkpoint; see the worker logs above")
    if dest.exists():
        shutil.rmtree(dest)
    with result.checkpoint.as_directory() as folder:
        shutil.copytree(folder, dest)
    return dest


def _metrics(values: dict[str, float]) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, 0) for k, v in values.items()]


def _log_outputs(
    cfg: SteepConfig, run_id: str, prepared: Prepared, checkpoint_dir: Path, history: list[dict[str, float]],
    log_model: bool = True,
) -> str | None:  # fmt: skip
    """Loss curve, checkpoint state and the pyfunc model (adapter + base, or merged / full weights)."""
    model_dir = checkpoint_dir / MODEL_DIR
    with mlflow.start_run(run_id=run_id, log_system_metrics=False), tempfile.TemporaryDirectory() as tmp:
        if history:
            mlflow.log_artifact(str(loss_plot(history, Path(tmp) / "loss_curve.png")), "plots")
            mlflow.log_dict({"history": history}, "plots/loss_history.json")
        mlflow.log_artifact(str(checkpoint_dir / STATE_FILE), "checkpoint")
        if not log_model:
            return None
        if cfg.training.method == "full":
            artifacts = {"model": str(model_dir)}
        elif cfg.training.merge_weights and cfg.training.method == "lora":
            merged = Path(tmp) / "merged"
            summarizer = models.load_for_inference(prepared.model_dir, model_dir)
            summarizer.model.merge_and_unload().save_pretrained(merged)
            summarizer.tokenizer.save_pretrained(merged)
            prepared.fmt.save(merged)
            artifacts = {"model": str(merged)}
        else:
            artifacts = {"base_model": str(prepared.model_dir), "adapter": str(model_dir)}
        return logged_model.log_summarizer(
            artifacts, cfg.serving.max_new_tokens, staging_dir=checkpoint_dir.parent
        )
