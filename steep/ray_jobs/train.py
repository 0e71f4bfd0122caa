"""The training loop each Ray Train worker runs: read it top to bottom.

    build model (LoRA / soft prompt / full) -> DDP -> restore the last checkpoint -> for each step of a
    length-grouped batch plan: padded rows (or packed ones, `training.packing`) -> loss on label tokens
    only -> AdamW (fused on GPU) -> report progress (rank 0, non-blocking, one step late on GPU so there is
    no host sync) -> checkpoint each epoch (and every `checkpoint_every_steps`; after a spot reclaim notice,
    every step until the node goes) -> export the trained model in the last one.

`train_loop_per_worker` (what Ray calls) runs a `TrainingRecipe`: `setup()` builds the pieces in that
order, `train()` runs epochs of steps; with `training.validation_loss` each checkpoint also carries the mean
loss per summary token on the validation rows (`validation_loss`). Inside a Ray Tune trial (`steep tune`
trains in the trial's own process) that loss also goes to Tune, whose early stopping reads it (`RayTrain`).
The driver (steep/pipeline/training.py) tokenizes once and passes the token ids in a typed `WorkerConfig`,
so workers repeat no preprocessing. The pieces the loop is built from have modules of their own: batches.py
(the batch plan, a pure function of (seed, epoch), so a resumed worker skips exactly the steps it already
did), losses.py, checkpoints.py and preemption.py.

Ray is imported inside the methods that use it, never at the top: importing `ray.train` picks Train V1
or V2 from RAY_TRAIN_V2_ENABLED, which the driver sets just before it starts the trainer (and imports this
module earlier), and the unit tests use the pieces here without Ray.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from steep import hardware, models
from steep.quiet import quiet_third_parties
from steep.ray_jobs.batches import make_batch, plan_batches
from steep.ray_jobs.checkpoints import MODEL_DIR, STATE_FILE, export_model, load_checkpoint, save_checkpoint
from steep.ray_jobs.losses import loss_module, validation_loss
from steep.ray_jobs.preemption import PreemptionWatch, hold_seconds, notice_event, poll_every
from steep.ray_jobs.worker_config import WorkerConfig


class BatchTooLargeError(RuntimeError):
    """Out of memory in a step; the message names the settings to lower (the driver makes it a SteepError)."""


def lr_lambda(total_steps: int, warmup_steps: int):
    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return schedule


# --------------------------------------------------------------------------------------------- ray
class RayTrain:
    """The three Ray Train calls the loop makes: its rank, the checkpoint to resume from, and the report.

    In a Ray Tune trial's own process (what `steep tune` runs: training.workers=0, Ray Train's local mode)
    Ray 2.60 refuses `ray.train.get_context/get_checkpoint/report` and asks for the `ray.tune` ones; the loop
    still needs the local mode's bookkeeping (the trainer's result carries the last checkpoint), so there it
    calls the local mode's own utilities, the ones those functions wrap, and reports each epoch's numbers to
    Tune as well: an early-stopping scheduler reads `val_loss` against `epoch`. Stopping a trial ends this
    thread at that report (Tune raises SystemExit in it).
    """

    def __init__(self) -> None:
        from ray.tune.trainable.trainable_fn_utils import _in_tune_session

        self.in_tune = bool(_in_tune_session())
        if self.in_tune:
            from ray.train.v2._internal.execution.train_fn_utils import get_train_fn_utils

            self.local = get_train_fn_utils()

    def context(self) -> Any:
        import ray.train

        return self.local.get_context() if self.in_tune else ray.train.get_context()

    def checkpoint(self) -> Any:
        import ray.train

        return self.local.get_checkpoint() if self.in_tune else ray.train.get_checkpoint()

    def preemption(self) -> Any:
        """Ray's notice that a node of this run is being reclaimed, or None. A collective call: every rank
        asks at the same step. A Tune trial runs in one process Ray never drains apart: no notice there."""
        if self.in_tune:
            return None
        import ray.train

        return ray.train.get_preemption_info()

    def report(self, metrics: dict[str, Any], checkpoint: Any) -> None:
        import ray.train

        if not self.in_tune:
            ray.train.report(metrics, checkpoint=checkpoint)
            return
        self.local.report(metrics, checkpoint=checkpoint)
        if metrics.get("val_loss") is not None:
            import ray.tune

            keep = {"val_loss": metrics["val_loss"], "loss": metrics["loss"], "step": metrics["step"]}
            ray.tune.report({"epoch": metrics["epochs_done"], **keep})


# --------------------------------------------------------------------------------------------- the loop
class StepReports:
    """Rank 0's per-step events; on GPU sent one step late.

    Reading a loss (`.item()`) waits for the device; reading the previous step's once this one is queued
    keeps the GPU busy, so the loop has no host sync of its own per step. On CPU there is nothing to
    overlap, and a step is reported as soon as it is done. flush() sends what is pending.
    """

    def __init__(self, sink: Any, lag: bool):
        self.sink = sink
        self.lag = lag
        self.pending: tuple[dict[str, Any], torch.Tensor] | None = None
        self.last_loss = float("nan")

    def add(self, event: dict[str, Any], loss: torch.Tensor) -> None:
        self.flush()
        self.pending = (event, loss.detach())
        if not self.lag:
            self.flush()

    def flush(self) -> float:
        if self.pending is not None and self.sink is not None:
            event, loss = self.pending
            self.last_loss = loss.item()
            self.sink.put_nowait({**event, "loss": self.last_loss})
        self.pending = None
        return self.last_loss


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker (or the in-process loop when workers=0); Ray calls it with the driver's config."""
    quiet_third_parties()  # a Ray worker is a process of its own: steep's CLI start-up never ran in it
    recipe = TrainingRecipe(WorkerConfig.from_loop_config(config))
    recipe.setup()
    recipe.train()


class TrainingRecipe:
    """One worker's fine-tuning: `setup()` builds the pieces in order, `train()` runs the steps.

    Every rank builds the same model and optimizer from the same seed; only rank 0 sends progress events
    and writes checkpoint files, and every rank reports each checkpoint (it is a barrier).
    """

    def __init__(self, job: WorkerConfig):
        self.job = job
        self.cfg = job.cfg
        self.kind: str = job.kind
        self.examples: list[dict[str, list[int]]] = job.examples
        self.step = 0  # optimizer steps done over all epochs; a restored checkpoint moves it on
        self.watch = PreemptionWatch()  # asks Ray for reclaim notices; `train()` sets how often
        self.step_seconds = 0.0  # one median step, timed for the estimate
        self.checkpoint_seconds = 0.0  # the last checkpoint's

    # ----------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        """In this order: the seed before the model, the schedule's length before the optimizer, then a
        restore into model and optimizer."""
        self._setup_process()
        self._setup_device_and_precision()
        self._setup_model()
        self._setup_data()
        self._setup_optimizer()
        self._restore_checkpoint()
        self._setup_reporting()

    def _setup_process(self) -> None:
        self.ray = RayTrain()  # late, like every Ray import here: see the module docstring
        ctx = self.ray.context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.nodes = self._gather_nodes()
        torch.set_num_threads(self.job.threads)  # the driver splits a node's CPUs among its workers
        torch.manual_seed(self.cfg.project.seed)  # before the model: LoRA's initial weights repeat

    def _gather_nodes(self) -> list[dict[str, str]]:
        """The Ray node of each rank, in rank order (its id, and its name on a steep stack): the driver
        records where the workers ran."""
        import ray

        node = {"id": "local", "name": "local"}
        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            node_id = ctx.get_node_id()
            node = {"id": node_id, "name": ctx.get_node_labels().get("steep-node", node_id[:8])}
        if self.world == 1 or not torch.distributed.is_initialized():
            return [node]
        nodes: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(nodes, node)
        return nodes

    def _setup_device_and_precision(self) -> None:
        """`training.precision: auto` resolves here: this worker's node may differ from the driver's."""
        import ray.train.torch

        self.device = ray.train.torch.get_device() if self.cfg.training.use_gpu else torch.device("cpu")
        self.precision = hardware.resolve_precision(self.cfg.training.precision, self.device)
        bf16 = self.precision == "bf16"
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    def _setup_model(self) -> None:
        """The base model with the method applied (LoRA / soft prompt / full), wrapped in its loss and DDP."""
        import ray.train.torch

        t, model_dir = self.cfg.training, Path(self.job.model_dir)
        self.tokenizer = models.load_tokenizer(model_dir, self.kind)
        base = models.load_model(model_dir, self.kind, attention=t.attention)
        self.model = models.apply_method(base, t, self.kind)
        self.model.train()
        self.step_module = loss_module(self.model, self.kind, t.method).to(self.device)
        if self.world > 1:  # DDP: backward() averages the gradients over the workers
            self.step_module = ray.train.torch.prepare_model(self.step_module, move_to_device=False)

    def _setup_data(self) -> None:
        """Token lengths for the batch plan; the schedule's length: epochs x steps, capped by max_steps."""
        t = self.cfg.training
        self.lengths = [models.example_tokens(e, self.kind) for e in self.examples]
        plan = plan_batches(self.lengths, t.batch_size, self.cfg.project.seed, 0, self.world)
        self.steps_per_epoch = len(plan)
        self.total_steps = min(t.max_steps or math.inf, self.steps_per_epoch * t.epochs)
        model = self.cfg.model
        self.pack_width = model.max_source_tokens + model.max_target_tokens if t.packing else None
        self.validation = self.job.validation_examples

    def _setup_optimizer(self) -> None:
        """AdamW on the trainable weights only; the rate warms up, then falls linearly to 0 at the end."""
        t = self.cfg.training
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        fused = self.device.type == "cuda"  # one kernel for the whole update instead of one per tensor
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=t.learning_rate, weight_decay=t.weight_decay, fused=fused
        )
        schedule = lr_lambda(self.total_steps, warmup_steps=int(t.warmup_ratio * self.total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)

    def _restore_checkpoint(self) -> None:
        """The later of Ray's latest checkpoint (a worker crash, a rerun) and the driver's `resume_from`.

        The driver passes the newest complete checkpoint on disk: one a killed driver never registered
        with Ray is newer than Ray's.
        """
        resume_dir = self.job.resume_from
        checkpoint = self.ray.checkpoint()
        with contextlib.ExitStack() as stack:
            candidates = [Path(resume_dir)] if resume_dir else []
            if checkpoint is not None:
                candidates.append(Path(stack.enter_context(checkpoint.as_directory())))
            if candidates:
                latest = max(candidates, key=lambda f: json.loads((f / STATE_FILE).read_text())["step"])
                self.step = load_checkpoint(latest, self.model, self.optimizer, self.scheduler)["step"]

    def _setup_reporting(self) -> None:
        """Progress goes through StepReports: on GPU a step's loss is read one step late, without a stall."""
        self.sink = self.job.sink if self.rank == 0 else None  # rank 0 speaks for all
        self.reports = StepReports(self.sink, lag=self.device.type == "cuda")

    # ----------------------------------------------------------------------------------------- train
    def train(self) -> None:
        """Each epoch from the restored step on, a checkpoint after each; the last one is final."""
        epochs = self.cfg.training.epochs
        start = {"event": "start", "step": self.step, "total_steps": self.total_steps, "world": self.world,
                 "nodes": self.nodes, "precision": self.precision,
                 "device": hardware.describe(self.device, self.job.threads)}  # fmt: skip
        self._send({**start, "estimate_s": self._estimate_seconds()})
        self._calibrate_preemption_polls()
        first_epoch = self.step // self.steps_per_epoch if self.steps_per_epoch else 0
        for epoch in range(first_epoch, epochs):
            self._train_epoch(epoch)
            if self.step >= self.total_steps:
                break
            if epoch < epochs - 1:
                self._checkpoint(epoch, final=False)
        self._checkpoint(epochs - 1, final=True)

    def _estimate_seconds(self) -> float | None:
        """The steps left, timed on this machine before the first: a median batch's forward and backward
        pass (gradients dropped, weights untouched), scaled by the tokens still to train. The faster of two
        passes: the run's own start-up (MLflow, Prefect) can take a core away from the first."""
        steps_left = self.total_steps - self.step
        if steps_left <= 0 or not self.steps_per_epoch:
            return None
        t = self.cfg.training
        plan = plan_batches(self.lengths, t.batch_size, self.cfg.project.seed, 0, self.world)
        probe = sorted(plan, key=lambda ids: sum(self.lengths[i] for i in ids))[len(plan) // 2]
        batch = self._device_batch(probe)
        seconds = min(self._timed_pass(batch) for _ in range(2))
        self.step_seconds = seconds
        per_token = seconds / sum(self.lengths[i] for i in probe)
        return per_token * sum(self.lengths) * steps_left / self.steps_per_epoch

    def _calibrate_preemption_polls(self) -> None:
        """How often to ask Ray for a reclaim notice: one ask timed against the step time measured for the
        estimate, rank 0's answer for all (every rank must ask at the same steps)."""
        started = time.perf_counter()
        self.watch.notice = self.ray.preemption()
        every = poll_every(self.step_seconds, time.perf_counter() - started)
        if self.world > 1 and torch.distributed.is_initialized():
            shared = [every]
            torch.distributed.broadcast_object_list(shared, src=0)
            every = shared[0]
        self.watch.every = every
        if self.watch.notice is not None:  # a node was already being drained when this attempt started
            self._send(notice_event(self.watch.notice, self.step, self.nodes, time.time()))

    def _timed_pass(self, batch: dict[str, torch.Tensor]) -> float:
        """Seconds of one forward and backward pass; the gradients are dropped."""
        started = time.perf_counter()
        self._forward_backward(batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        self.optimizer.zero_grad(set_to_none=True)
        return seconds

    def _device_batch(self, batch_ids: list[int]) -> dict[str, torch.Tensor]:
        """This rank's share of a global batch, as tensors on the device."""
        mine = make_batch(
            self.examples, batch_ids[self.rank :: self.world], self.lengths, self.tokenizer.pad_token_id,
            self.kind, self.pack_width,
        )  # fmt: skip
        return {k: v.to(self.device, non_blocking=True) for k, v in mine.items()}

    def _train_epoch(self, epoch: int) -> None:
        """The epoch's batch plan (a pure function of seed and epoch), skipping what ran before a restart."""
        t = self.cfg.training
        batches = plan_batches(self.lengths, t.batch_size, self.cfg.project.seed, epoch, self.world)
        for index, batch_ids in enumerate(batches):
            if epoch * self.steps_per_epoch + index < self.step:
                continue  # done before the restart
            if self.step >= self.total_steps:
                break
            self._train_step(epoch, batch_ids)
            every = t.checkpoint_every_steps
            if every and self.step % every == 0 and self.step < self.total_steps:
                self._checkpoint(epoch, final=False)
            if self.watch.due(self.step) and self.step < self.total_steps:
                self._watch_preemption(epoch)

    def _watch_preemption(self, epoch: int) -> None:
        """Ask Ray for a reclaim notice; from the notice on, checkpoint after every step, and wait for the
        node to go once the deadline leaves no time for another (Ray then restarts the run from that
        checkpoint, on the remaining or replacement nodes). The wait is each rank's own, no collective
        call: a rank that trained one more step meanwhile only waits in it for the others."""
        if self.watch.notice is None:
            self.watch.notice = self.ray.preemption()
            if self.watch.notice is None:
                return
            self._send(notice_event(self.watch.notice, self.step, self.nodes, time.time()))
        if self.watch.needs_checkpoint(self.step):
            self._checkpoint(epoch, final=False, reason="preemption")
        deadline_ms = self.watch.notice.deadline_ms
        deadline = deadline_ms / 1000 if deadline_ms else None
        time.sleep(hold_seconds(deadline, time.time(), self.step_seconds + self.checkpoint_seconds))

    def _train_step(self, epoch: int, batch_ids: list[int]) -> None:
        """One optimizer step; `batch_ids` is the global batch, of which this rank takes every world-th."""
        self._maybe_fail()
        started = time.perf_counter()
        loss = self._forward_backward(self._device_batch(batch_ids))
        lr = self._optimizer_step()
        self.step += 1
        if self.sink is not None:
            tokens = sum(self.lengths[i] for i in batch_ids)  # real tokens of the global batch, no padding
            seconds = time.perf_counter() - started
            self.reports.add(
                {"event": "step", "step": self.step, "epoch": epoch, "lr": lr, "tokens": tokens,
                 "seconds": seconds, "time": time.time()}, loss,
            )  # fmt: skip

    def _forward_backward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Loss and gradients; out of memory becomes an error that names the settings to lower."""
        try:
            with self.autocast:
                loss = self.step_module(**batch)
            loss.backward()
        except (RuntimeError, MemoryError) as exc:
            if not _is_out_of_memory(exc):
                raise
            raise BatchTooLargeError(oom_message(self.cfg.training.batch_size, self.world)) from exc
        return loss

    def _optimizer_step(self) -> float:
        """Clip, step, move the schedule on; -> the learning rate this step used."""
        torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return lr

    def _checkpoint(self, epoch: int, final: bool, reason: str = "schedule") -> None:
        """All ranks report (it is a barrier); rank 0 writes the files, the final one with the model, and
        measures the validation loss (with `training.validation_loss`)."""
        import ray.train

        started = time.perf_counter()
        metrics = {"loss": self.reports.flush(), "step": self.step, "epoch": epoch, "final": final}
        val_loss = self._validation_loss()
        if val_loss is not None:
            done = min(self.cfg.training.epochs, math.ceil(self.step / max(1, self.steps_per_epoch)))
            metrics.update(val_loss=val_loss, epochs_done=done)  # max_steps may end training early
            self._send({"event": "validation", "step": self.step, "epoch": done, "val_loss": val_loss})
        local_root = self.job.local_checkpoint_root
        if local_root is None:  # Ray copies the folder into its storage
            folder = Path(tempfile.mkdtemp(prefix="steep-ckpt-"))
        else:  # in-process mode: Ray does not persist, so write in place
            folder = Path(local_root) / f"checkpoint_{self.step:06d}"
        if self.rank == 0:
            state = {"step": self.step, "epoch": epoch, "total_steps": self.total_steps, "final": final}
            save_checkpoint(folder, self.model, self.optimizer, self.scheduler, state)
            if final:
                fmt = self.job.prompt_format
                export_model(folder / MODEL_DIR, self.model, self.tokenizer, fmt)
        checkpoint = ray.train.Checkpoint.from_directory(str(folder)) if self.rank == 0 else None
        self.ray.report(metrics, checkpoint=checkpoint)
        if local_root is None:
            shutil.rmtree(folder, ignore_errors=True)
        self.watch.checkpointed.add(self.step)
        self.checkpoint_seconds = time.perf_counter() - started
        self._send({"event": "checkpoint", "step": self.step, "final": final, "reason": reason,
                    "time": time.time()})  # fmt: skip

    def _validation_loss(self) -> float | None:
        """Rank 0's mean loss per summary token on the validation rows, in eval mode; None without them.

        The other ranks wait at the checkpoint's report meanwhile; rank 0 runs its own copy of the model
        (not the DDP wrapper), so no collective call is made.
        """
        if self.rank != 0 or not self.validation or not self.cfg.training.validation_loss:
            return None
        module = getattr(self.step_module, "module", self.step_module)  # DDP wraps the loss module
        self.model.eval()
        try:
            return validation_loss(
                module, self.validation, pad_id=self.tokenizer.pad_token_id, kind=self.kind,
                batch_size=max(1, self.cfg.training.batch_size // self.world), device=self.device,
                autocast=self.autocast,
            )  # fmt: skip
        finally:
            self.model.train()

    def _send(self, event: dict[str, Any]) -> None:
        """An event for the driver's progress bar and MLflow logger (rank 0 only; fire and forget)."""
        if self.sink is not None:
            self.sink.put_nowait(event)

    def _maybe_fail(self) -> None:
        """The fault drill (STEEP_FAULT_AT_STEP): the last rank crashes once when it reaches that step."""
        at, marker = self.job.fault_at_step, self.job.fault_marker
        if at is not None and marker is not None and self.step == at and self.rank == self.world - 1:
            _fail_once(Path(marker), self.step)


def _is_out_of_memory(exc: BaseException) -> bool:
    """torch's and Python's out-of-memory errors, and the CPU allocator's plain RuntimeError."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return "can't allocate memory" in str(exc) or "out of memory" in str(exc)


def _fail_once(marker: Path, step: int) -> None:
    """Crash this worker the first time it reaches the drill's step (the restarted one goes on)."""
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(step))
        raise RuntimeError(f"injected worker failure at step {step} (pid {os.getpid()})")


def oom_message(batch_size: int, world: int) -> str:
    return (
        f"a training batch did not fit in memory (training.batch_size={batch_size} over {world} worker(s)). "
        "Lower training.batch_size, or model.max_source_tokens / model.max_target_tokens."
    )
