"""What a `steep run` has done so far, on disk, so `steep run --resume` continues it from its first unfinished
stage; and one `steep run` per project at a time.

project.home/pipeline/<flow run id>.json is written as the run goes: the config (as flat keys) and the data's
digest at the start, then each stage's outcome as it completes (the training run and its model, the
registered version, the promotion), and how the run ended. A run killed hard never writes its end; the lock
it held is gone with it (the kernel drops a dead process's flock), so it reads as interrupted.

Why not Prefect's task cache: a cache keyed on inputs recomputes on a miss, silently, while a resumed run
must be the run it claims to be, so a changed config or data is refused here, naming the change. And
training's outcome lives in MLflow (the logged model), not in a result store: the ledger keeps its address.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steep import tracking
from steep.config import SteepConfig
from steep.errors import SteepError

LEDGER_DIR = "pipeline"
LOCK_FILE = "run.lock"
STAGES = ("train", "evaluate", "register", "promote", "package")  # what a resumed run may find done


class ResumeError(SteepError):
    """Nothing to resume, or the run to resume is not the run it would continue."""


class RunInProgress(SteepError):
    """Another `steep run` of this project holds the lock."""


def ledger_dir(cfg: SteepConfig) -> Path:
    return (cfg.home / LEDGER_DIR).resolve()


@dataclass
class Ledger:
    path: Path
    data: dict[str, Any]

    @property
    def flow_run_id(self) -> str:
        return self.data["flow_run_id"]

    @property
    def status(self) -> str:
        return self.data["status"]

    def outcome(self, stage: str) -> dict[str, Any] | None:
        """What `stage` left when it completed (None: it did not)."""
        return self.data["stages"].get(stage)

    def first_unfinished(self) -> str:
        return next((stage for stage in STAGES if stage not in self.data["stages"]), "done")

    def record(self, stage: str, **outcome: Any) -> None:
        self.data["stages"][stage] = outcome
        self.save()

    def note(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def finish(self, status: str, error: str | None = None) -> None:
        self.note(status=status, ended=time.time(), error=error)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)  # a kill mid-write leaves the last whole ledger


def start(cfg: SteepConfig, flow_run_id: str) -> Ledger:
    """A new run's ledger: the config it runs with, the stages to come."""
    data = {"flow_run_id": flow_run_id, "status": "running", "started": time.time(), "config": _config(cfg),
            "data_digest": None, "stages": {}, "resumes": []}  # fmt: skip
    ledger = Ledger(ledger_dir(cfg) / f"{flow_run_id}.json", data)
    ledger.save()
    return ledger


def load(cfg: SteepConfig, flow_run_id: str) -> Ledger:
    path = ledger_dir(cfg) / f"{flow_run_id}.json"
    if not path.is_file():
        raise ResumeError(f"no `steep run` {flow_run_id} of this project under {ledger_dir(cfg)}")
    return Ledger(path, json.loads(path.read_text()))


def to_resume(cfg: SteepConfig, flow_run_id: str | None = None) -> Ledger:
    """The run `--resume` continues: the one named, else the latest; refused when it completed."""
    if flow_run_id:
        ledger = load(cfg, flow_run_id)
    else:
        found = sorted(ledger_dir(cfg).glob("*.json"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ResumeError(f"nothing to resume: no `steep run` recorded under {ledger_dir(cfg)}")
        ledger = Ledger(found[-1], json.loads(found[-1].read_text()))
    if ledger.status == "completed":
        raise ResumeError(
            f"`steep run` {ledger.flow_run_id} completed: nothing to resume. Start a new one with `steep run`"
        )
    return ledger


def changes(ledger: Ledger, cfg: SteepConfig, data_digest: str | None = None) -> list[str]:
    """What differs between the run as recorded and as it would resume: config keys, then the data."""
    before, now = ledger.data["config"], _config(cfg)
    found = [f"{key}: {before.get(key)} -> {now.get(key)}" for key in sorted(before.keys() | now.keys())
             if before.get(key) != now.get(key)]  # fmt: skip
    recorded = ledger.data.get("data_digest")
    if data_digest is not None and recorded and recorded != data_digest:
        found.append(f"data digest: {recorded[:12]} -> {data_digest[:12]} ({cfg.data.source} changed)")
    return found


def check_unchanged(ledger: Ledger, cfg: SteepConfig, data_digest: str | None = None) -> None:
    """Refuse to resume a run whose config or data changed since: it would not be the same run."""
    found = changes(ledger, cfg, data_digest)
    if found:
        raise ResumeError(
            f"`steep run` {ledger.flow_run_id} cannot be resumed: it ran with other inputs. "
            + "; ".join(found)
            + ". Put them back as they were to resume it, or start a new run with `steep run`"
        )


def _config(cfg: SteepConfig) -> dict[str, str]:
    """The config as flat keys, without where it lives (a moved project is still the same run)."""
    return {k: v for k, v in tracking.flat_params(cfg).items() if k != "project.home"}


# --------------------------------------------------------------------------------------------- one at a time
@contextlib.contextmanager
def exclusive(cfg: SteepConfig, flow_run_id: str) -> Iterator[None]:
    """Hold the project's run lock for the block; another run holding it is refused, named."""
    lock = ledger_dir(cfg) / LOCK_FILE
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInProgress(_holder_message(lock)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"flow_run_id": flow_run_id, "pid": os.getpid(), "since": time.time()}))
        handle.flush()
        yield


def check_free(cfg: SteepConfig) -> None:
    """Refuse now, before anything starts, when another run of this project holds the lock."""
    lock = ledger_dir(cfg) / LOCK_FILE
    if not lock.exists():
        return
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInProgress(_holder_message(lock)) from None


def _holder_message(lock: Path) -> str:
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        holder = {}
    since = time.strftime("%H:%M:%S", time.localtime(holder.get("since", time.time())))
    pid = holder.get("pid", "?")
    return (
        f"another `steep run` of this project is in progress: flow run {holder.get('flow_run_id', '?')} "
        f"(pid {pid}, since {since}). Wait for it to end, or stop it (kill {pid}) and continue it with "
        "`steep run --resume`"
    )
