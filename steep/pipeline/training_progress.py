"""What a training run shows: the worker's events become MLflow metrics (batched, off the training path)
and a terminal bar, or a log line every tenth of the run where there is no terminal; before the first step,
the loop's own estimate of the time it will take on this machine; a spot reclaim's notice, its checkpoint
and the restart with the steps it trains twice; a wait for placement every 30 s; at the end, the loss curve.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from steep import figures


class TrainingProgress:
    """Consumes worker events: per-step metrics to MLflow (batched, background) and a terminal bar."""

    def __init__(self, events: Any, logger: Any, total_tokens: int, show: bool, waiting: Any = None):
        self.events = events
        self.waiting = waiting  # a PlacementWait: what a run waiting for nodes says (Ray runs only)
        self.last_event = time.time()
        self.logger = logger
        self.total_tokens = total_tokens
        self.show = show
        self.history: list[dict[str, float]] = []
        self.validation: list[dict[str, float]] = []  # the validation loss at each epoch's end
        self.resumed_from = 0
        self.precision = "fp32"
        self.starts: list[dict[str, Any]] = []  # each (re)start of the loop: its first step, ranks' nodes
        self.preemptions: list[dict[str, Any]] = []  # each reclaim notice: nodes, step, deadline, checkpoint
        self.steps_redone = 0  # steps trained twice: done before a restart, after the checkpoint it resumed
        self._last_step = 0  # the last step this attempt of the loop reported
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steep-progress", daemon=True)
        self._bar: Any = None
        self._task: Any = None
        self._tokens = 0
        self.steps_seconds = 0.0  # time inside steps, summed over the steps reported
        self.estimate_s: float | None = None  # the steps' time, as the loop timed it before the first
        self.first_step_start: float | None = None
        self.last_step_end: float | None = None

    def __enter__(self) -> TrainingProgress:
        if self.show:
            self._bar = Progress(
                TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(), transient=False,
            )  # fmt: skip
            self._bar.start()
            self._task = self._bar.add_task("train", total=None, info="starting workers")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._consume()
        if self._bar is not None:
            self._bar.stop()

    def _get(self) -> list[dict[str, Any]]:
        if isinstance(self.events, queue.Queue):
            items = []
            while True:
                try:
                    items.append(self.events.get_nowait())
                except queue.Empty:
                    return items
        try:
            return list(self.events.get_nowait_batch(self.events.qsize()))
        except Exception:  # the queue actor is gone (driver shutting down)
            return []

    def _consume(self) -> None:
        for event in self._get():
            self.last_event = time.time()
            if event["event"] == "start":
                self._on_start(event)
            elif event["event"] == "step":
                self._on_step(event)
            elif event["event"] == "validation":
                row = {k: event[k] for k in ("step", "epoch", "val_loss")}
                self.validation.append(row)
                self.logger.log({"val_loss": row["val_loss"]}, step=row["step"])
            elif event["event"] == "preemption":
                self._on_preemption(event)
            elif event["event"] == "checkpoint" and event.get("reason") == "preemption":
                self._on_reclaim_checkpoint(event)

    @property
    def restarts(self) -> int:
        return max(0, len(self.starts) - 1)

    def _on_start(self, event: dict[str, Any]) -> None:
        """A (re)started loop: where it resumed from, and the precision `auto` resolved to on the worker."""
        self.resumed_from = max(self.resumed_from, event["step"])
        self.precision = event.get("precision", self.precision)
        nodes = event.get("nodes", [])
        if self.starts:  # a restart: the steps since the checkpoint it resumed from are trained again
            redone = max(0, self._last_step - event["step"])
            self.steps_redone += redone
            reclaim = next((p for p in self.preemptions if "restart" not in p), None)
            if reclaim is not None:
                reclaim["restart"] = time.time()
            why = "a spot reclaim" if reclaim is not None else "a failure"
            print(f"training restarts after {why}, from step {event['step']}: {redone} step(s) trained again",
                  flush=True)  # fmt: skip
        self._last_step = event["step"]
        self.starts.append({"step": event["step"], "nodes": nodes})
        names = sorted({n["name"] for n in nodes})
        if len(names) > 1:  # worth saying only when the run spans nodes
            restart = len(self.starts) - 1
            again = f"; restart {restart}, from step {event['step']}" if restart else ""
            where = f"{len(names)} Ray nodes ({', '.join(names)}{again})"
            print(f"training on {len(nodes)} workers across {where}", flush=True)
        if event.get("estimate_s") is not None:
            self.estimate_s = event["estimate_s"]
            self.logger.log({"estimated_train_s": self.estimate_s}, step=event["step"])
            print(estimate_line(event), flush=True)
        if self._bar is not None:
            self._bar.update(self._task, total=event["total_steps"], completed=event["step"], info="")

    def _on_preemption(self, event: dict[str, Any]) -> None:
        """A reclaim notice (rank 0 saw it): from now on the loop checkpoints after every step."""
        left = f", {event['deadline'] - event['time']:.0f} s before the deadline" if event["deadline"] else ""
        self.preemptions.append(
            {k: event[k] for k in ("step", "nodes", "deadline")} | {"notice": event["time"]}
        )
        print(f"spot reclaim notice for {', '.join(event['nodes'])} at step {event['step']}{left}: "
              "checkpointing after every step until the node goes", flush=True)  # fmt: skip

    def _on_reclaim_checkpoint(self, event: dict[str, Any]) -> None:
        """The first checkpoint after a notice: how long after the notice it was in."""
        last = self.preemptions[-1] if self.preemptions else None
        if last is None or "checkpoint" in last:
            return
        last.update(checkpoint=event["time"], checkpoint_step=event["step"])
        print(f"checkpoint at step {event['step']}, {event['time'] - last['notice']:.1f} s after the notice",
              flush=True)  # fmt: skip

    def _on_step(self, event: dict[str, Any]) -> None:
        """One step: a history row, its metrics to MLflow, and the bar (or a log line) moved on."""
        self._last_step = event["step"]
        if self.first_step_start is None:
            self.first_step_start = event["time"] - event["seconds"]
        self.last_step_end = event["time"]
        self._tokens += event["tokens"]
        self.steps_seconds += event["seconds"]
        tps = event["tokens"] / max(event["seconds"], 1e-9)
        row = {"step": event["step"], "loss": event["loss"], "lr": event["lr"], "tokens_per_s": tps}
        self.history.append(row)
        self.logger.log({k: v for k, v in row.items() if k != "step"}, step=event["step"])
        if self._bar is not None:
            avg = self._tokens / max(self.steps_seconds, 1e-9)
            info = f"epoch {event['epoch'] + 1} loss {event['loss']:.3f} {avg:,.0f} tok/s"
            self._bar.update(self._task, completed=event["step"], info=info)
            if not self._bar.console.is_terminal:
                self._log_line(event, info)

    def _log_line(self, event: dict[str, Any], info: str) -> None:
        """Without a terminal (logs, CI, a Prefect worker) the bar is invisible: log every tenth instead."""
        total = self._bar.tasks[0].total or 0
        tenth = max(1, total // 10)
        if event["step"] % tenth and event["step"] != total:
            return
        remaining = self._bar.tasks[0].time_remaining
        eta = f", about {remaining:.0f} s left" if remaining else ""
        print(f"training step {event['step']}/{total}: {info}{eta}", flush=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._consume()
            self._say_waiting()

    def _say_waiting(self) -> None:
        """Every 30 s while no event came and a node of the last placement is lost: what the run waits for."""
        if self.waiting is None or not self.starts:
            return
        try:
            line = self.waiting.line(self.starts[-1]["nodes"], self.last_event, time.time())
        except Exception:  # asking Ray must never stop the progress thread
            return
        if line:
            print(line, flush=True)

    @property
    def tokens_per_s(self) -> float:
        return self._tokens / self.steps_seconds if self.steps_seconds else 0.0


def estimate_line(event: dict[str, Any]) -> str:
    """'training: 76 steps in fp32 on <CPU>, 2 threads, no native bf16: about 4 min 10 s on this machine'."""
    steps = event["total_steps"] - event["step"]
    device = event.get("device")
    where = f" on {device}" if device else ""
    return (
        f"training: {steps} steps in {event['precision']}{where}: about {duration(event['estimate_s'])} "
        "(timed on this machine before the first step)"
    )


def duration(seconds: float) -> str:
    """'45 s', '4 min 10 s', '2 h 05 min': to the second only where that is still meaningful."""
    if seconds < 1:
        return "under 1 s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class RayQueueSink:
    """What rank 0 puts events into: fire-and-forget, so a step never waits on the driver."""

    def __init__(self, ray_queue: Any):
        self.queue = ray_queue

    def put_nowait(self, item: dict[str, Any]) -> None:
        self.queue.actor.put_nowait.remote(item)


def loss_plot(history: list[dict[str, float]], path: Path) -> Path:
    """The loss curve (raw and smoothed) against the optimizer step, as a PNG."""
    steps = [h["step"] for h in history]
    losses = [h["loss"] for h in history]
    smooth = pd.Series(losses).ewm(alpha=0.2).mean() if losses else []
    fig, ax = figures.pyplot().subplots(figsize=(7, 4))
    ax.plot(steps, losses, alpha=0.35, label="loss")
    ax.plot(steps, smooth, label="loss (EMA)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (summary tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    return figures.save(fig, path, dpi=110)
