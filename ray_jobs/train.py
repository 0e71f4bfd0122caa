"""The training loop each Ray Train worker runs: read it top to bottom.

    build model (LoRA / soft prompt / full) -> DDP -> restore the last checkpoint -> for each step of a
    length-grouped batch plan: padded rows (or packed ones, `training.packing`) -> loss on label tokens
    only -> AdamW (fused on GPU) -> report progress (rank 0, non-blocking, one step late on GPU so there is
    no host sync) -> checkpoint each epoch (and every `checkpoint_every_steps`) -> export the trained model
    in the last one.

The driver (steep/training.py) tokenizes once and passes token ids in `config`, so workers repeat no
preprocessing. The batch plan is a pure function of (seed, epoch), so a resumed worker skips exactly the
steps it already did.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from steep import models
from steep.config import SteepConfig
from steep.quiet import quiet_third_parties

STATE_FILE = "state.json"
TRAINABLE_FILE = "trainable.pt"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
MODEL_DIR = "model"


class BatchTooLargeError(RuntimeError):
    """Out of memory in a step; the message names the settings to lower (the driver makes it a SteepError)."""


# --------------------------------------------------------------------------------------------- batches
def plan_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int, world: int = 1
) -> list[list[int]]:
    """Length-grouped batches: shuffle, sort within windows of 16 batches, shuffle the batches.

    Examples of similar length share a batch (little padding) while batch order stays random. Batches too
    small to give every worker one example are dropped (DDP needs every rank to step).
    """
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 16
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i], reverse=True)
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    batches = [b for b in batches if len(b) >= world]
    rng.shuffle(batches)
    return batches


def collate(examples: list[dict[str, list[int]]], pad_id: int, kind: str) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example of this micro-batch; labels are -100 on padding."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    label_width = width if kind == "causal" else max(len(e["labels"]) for e in examples)
    labels = torch.full((len(examples), label_width), models.IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, :n] = torch.tensor(e["input_ids"])
        mask[row, :n] = 1
        labels[row, : len(e["labels"])] = torch.tensor(e["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pack_rows(lengths: list[int], ids: list[int], width: int) -> list[list[int]]:
    """First-fit decreasing: a step's examples into as few rows of `width` tokens as they fit in."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(ids, key=lambda i: lengths[i], reverse=True):
        row = next((r for r, free in enumerate(room) if lengths[i] <= free), None)
        if row is None:
            rows.append([i])
            room.append(max(width, lengths[i]) - lengths[i])
        else:
            rows[row].append(i)
            room[row] -= lengths[i]
    return rows


def collate_packed(rows: list[list[dict[str, list[int]]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Causal examples laid end to end in each row, positions restarting at 0 for each example.

    No attention mask: transformers reads the restarts in `position_ids` as sequence boundaries and keeps
    attention inside each example (a block-diagonal mask with SDPA, variable-length kernels with
    flash_attention_2 / flex_attention). An example's first token is never a target (it would be predicted
    from the previous example); the padding at a row's end is a sequence of its own.
    """
    width = max(sum(len(e["input_ids"]) for e in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), models.IGNORE_INDEX, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e["input_ids"])
            ids[r, at : at + n] = torch.tensor(e["input_ids"])
            positions[r, at : at + n] = torch.arange(n)
            labels[r, at + 1 : at + n] = torch.tensor(e["labels"][1:n])
            at += n
        positions[r, at:] = torch.arange(width - at)
    return {"input_ids": ids, "position_ids": positions, "labels": labels}


def make_batch(
    examples: list[dict[str, list[int]]],
    ids: list[int],
    lengths: list[int],
    pad_id: int,
    kind: str,
    pack_width: int | None,
) -> dict[str, torch.Tensor]:
    """One worker's share of a step: packed rows when `pack_width` is set, else padded to the longest."""
    if pack_width is None:
        return collate([examples[i] for i in ids], pad_id, kind)
    rows = pack_rows(lengths, ids, pack_width)
    return collate_packed([[examples[i] for i in row] for row in rows], pad_id)


# --------------------------------------------------------------------------------------------- loss
class LabelOnlyCausalLoss(nn.Module):
    """Causal LM loss that projects to the vocabulary only where there are labels.

    A summary is ~10% of the tokens, so skipping the LM head (hidden x vocab) on prompt and padding
    positions saves most of the head's time and memory. DDP wraps this module, so gradients still sync.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.backbone = base.base_model
        self.head = base.get_output_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != models.IGNORE_INDEX
        logits = self.head(hidden[:, :-1][keep])
        return F.cross_entropy(logits.float(), targets[keep])


class ModelLoss(nn.Module):
    """The model's own loss: seq2seq (labels are all targets anyway), soft prompts, unusual heads."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        packed = {} if position_ids is None else {"position_ids": position_ids, "use_cache": False}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **packed).loss


def loss_module(model: nn.Module, kind: str, method: str) -> nn.Module:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    plain_head = not any(
        getattr(base.config, key, None)
        for key in ("final_logit_softcapping", "logit_scale", "logits_scaling")
    )
    if kind == "causal" and method != "prompt_tuning" and plain_head:
        return LabelOnlyCausalLoss(model)
    return ModelLoss(model)


# --------------------------------------------------------------------------------------------- checkpoints
def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only what training changes: the adapter or soft prompt, or every weight for method=full."""
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k in names}


def save_checkpoint(folder: Path, model: nn.Module, optimizer, scheduler, state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(trainable_state(model), folder / TRAINABLE_FILE)
    torch.save(optimizer.state_dict(), folder / OPTIMIZER_FILE)
    torch.save(scheduler.state_dict(), folder / SCHEDULER_FILE)
    (folder / STATE_FILE).write_text(json.dumps(state))


def load_checkpoint(folder: Path, model: nn.Module, optimizer, scheduler) -> dict[str, Any]:
    model.load_state_dict(torch.load(folder / TRAINABLE_FILE, weights_only=True), strict=False)
    optimizer.load_state_dict(torch.load(folder / OPTIMIZER_FILE, weights_only=True))
    scheduler.load_state_dict(torch.load(folder / SCHEDULER_FILE, weights_only=True))
    return json.loads((folder / STATE_FILE).read_text())


def export_model(folder: Path, model: nn.Module, tokenizer, fmt: models.PromptFormat) -> None:
    """What inference loads: the PEFT adapter (or full weights) + tokenizer + prompt format."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    fmt.save(folder)


def lr_lambda(total_steps: int, warmup_steps: int):
    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return schedule


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


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls several times faster than fp32 (else bf16 is emulated, and slower)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 where the hardware does it natively; resolved on the worker, whose node may differ."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker (or the in-process loop when workers=0)."""
    quiet_third_parties()  # a Ray worker is a process of its own: steep's CLI start-up never ran in it
    import ray.train
    import ray.train.torch

    cfg = SteepConfig.model_validate(config["cfg"])
    t = cfg.training
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    torch.manual_seed(cfg.project.seed)
    device = ray.train.torch.get_device() if t.use_gpu else torch.device("cpu")
    precision = resolve_precision(t.precision, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    # model
    model_dir, kind = Path(config["model_dir"]), config["kind"]
    tokenizer = models.load_tokenizer(model_dir, kind)
    model = models.apply_method(models.load_model(model_dir, kind, attention=t.attention), t, kind)
    model.train()
    step_module = loss_module(model, kind, t.method).to(device)
    if world > 1:
        step_module = ray.train.torch.prepare_model(step_module, move_to_device=False)

    # data and schedule
    examples: list[dict[str, list[int]]] = config["examples"]
    lengths = [models.example_tokens(e, kind) for e in examples]
    steps_per_epoch = len(plan_batches(lengths, t.batch_size, cfg.project.seed, 0, world))
    total_steps = min(t.max_steps or math.inf, steps_per_epoch * t.epochs)
    pack_width = cfg.model.max_source_tokens + cfg.model.max_target_tokens if t.packing else None
    trainable = [p for p in model.parameters() if p.requires_grad]
    fused = device.type == "cuda"  # one kernel for the whole update instead of one per tensor
    optimizer = torch.optim.AdamW(trainable, lr=t.learning_rate, weight_decay=t.weight_decay, fused=fused)
    warmup = int(t.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, warmup))

    # resume: Ray's latest checkpoint (after a worker crash or a rerun of the same run), else the driver's
    step = 0
    checkpoint = ray.train.get_checkpoint()
    resume_dir = config.get("resume_from")
    with contextlib.ExitStack() as stack:
        candidates = [Path(resume_dir)] if resume_dir else []
        if checkpoint is not None:
            candidates.append(Path(stack.enter_context(checkpoint.as_directory())))
        if candidates:
            latest = max(candidates, key=lambda f: json.loads((f / STATE_FILE).read_text())["step"])
            step = load_checkpoint(latest, model, optimizer, scheduler)["step"]
    sink = config.get("sink") if rank == 0 else None
    fmt = models.PromptFormat(**config["prompt_format"])
    local_ckpt_root = config.get("local_checkpoint_root")

    def checkpoint_now(epoch: int, final: bool, metrics: dict[str, Any]) -> None:
        """All ranks report (it is a barrier); rank 0 writes the files."""
        folder = Path(tempfile.mkdtemp(prefix="steep-ckpt-")) if local_ckpt_root is None else None
        if local_ckpt_root is not None:  # in-process mode: Ray does not persist, so write in place
            folder = Path(local_ckpt_root) / f"checkpoint_{step:06d}"
        assert folder is not None
        if rank == 0:
            state = {"step": step, "epoch": epoch, "total_steps": total_steps, "final": final}
            save_checkpoint(folder, model, optimizer, scheduler, state)
            if final:
                export_model(folder / MODEL_DIR, model, tokenizer, fmt)
        report = {**metrics, "step": step, "epoch": epoch, "final": final}
        ckpt = ray.train.Checkpoint.from_directory(str(folder)) if rank == 0 else None
        ray.train.report(report, checkpoint=ckpt)
        if local_ckpt_root is None:
            shutil.rmtree(folder, ignore_errors=True)
        if sink is not None:
            sink.put_nowait({"event": "checkpoint", "step": step, "final": final})

    if sink is not None:
        start = {"event": "start", "step": step, "total_steps": total_steps, "world": world}
        sink.put_nowait({**start, "precision": precision})
    reports = StepReports(sink, lag=device.type == "cuda")
    fail_at = config.get("fail_at_step")
    first_epoch = step // steps_per_epoch if steps_per_epoch else 0
    for epoch in range(first_epoch, t.epochs):
        batches = plan_batches(lengths, t.batch_size, cfg.project.seed, epoch, world)
        for index, batch_ids in enumerate(batches):
            if epoch * steps_per_epoch + index < step:
                continue  # done before the restart
            if step >= total_steps:
                break
            if fail_at is not None and step == fail_at and rank == world - 1:
                _fail_once(Path(config["fail_marker"]), step)
            started = time.perf_counter()
            mine = make_batch(
                examples, batch_ids[rank::world], lengths, tokenizer.pad_token_id, kind, pack_width
            )
            batch = {k: v.to(device, non_blocking=True) for k, v in mine.items()}
            try:
                with autocast:
                    loss = step_module(**batch)
                loss.backward()
            except (torch.OutOfMemoryError, MemoryError) as exc:
                raise BatchTooLargeError(oom_message(t.batch_size, world)) from exc
            except RuntimeError as exc:
                if "can't allocate memory" not in str(exc) and "out of memory" not in str(exc):
                    raise
                raise BatchTooLargeError(oom_message(t.batch_size, world)) from exc
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if sink is not None:
                tokens = sum(lengths[i] for i in batch_ids)  # real tokens of the global batch, no padding
                seconds = time.perf_counter() - started
                reports.add(
                    {"event": "step", "step": step, "epoch": epoch, "lr": lr, "tokens": tokens,
                     "seconds": seconds, "time": time.time()}, loss,
                )  # fmt: skip
            if t.checkpoint_every_steps and step % t.checkpoint_every_steps == 0 and step < total_steps:
                checkpoint_now(epoch, final=False, metrics={"loss": reports.flush()})
        if step >= total_steps:
            break
        if epoch < t.epochs - 1:
            checkpoint_now(epoch, final=False, metrics={"loss": reports.flush()})
    checkpoint_now(t.epochs - 1, final=True, metrics={"loss": reports.flush()})


def _fail_once(marker: Path, step: int) -> None:
    """Fault injection for tests: crash this worker the first time it reaches `fail_at_step`."""
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(step))
        raise RuntimeError(f"injected worker failure at step {step} (pid {os.getpid()})")


def oom_message(batch_size: int, world: int) -> str:
    return (
        f"a training batch did not fit in memory (training.batch_size={batch_size} over {world} worker(s)). "
        "Lower training.batch_size, or model.max_source_tokens / model.max_target_tokens."
    )
