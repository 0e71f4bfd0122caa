"""Activity is a heartbeat, not a status: a training run proves it is alive by beating on its MLflow run.

A driver killed hard (SIGKILL, the OOM killer, a lost machine) never sets its run FINISHED or FAILED, so a
RUNNING status alone would count as activity forever and keep an idle stack up. The training driver sets the
tag `steep.heartbeat` (epoch seconds) every few seconds; a RUNNING run whose last beat is older than
STALE_BEATS intervals is dead: it stops counting as activity, and whoever looks next marks it KILLED.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import psutil

TAG = "steep.heartbeat"  # epoch seconds of the last beat
INTERVAL_TAG = "steep.heartbeat_interval_s"
KILLED_TAG = "steep.killed"  # why steep marked a silent run KILLED
INTERVAL_ENV = "STEEP_HEARTBEAT_S"  # tests and drills shorten the beat
DEFAULT_INTERVAL_S = 30.0
STALE_BEATS = 3  # beats missed before a run counts as dead
DRIVER_ENV = "STEEP_DRIVER_PID"  # set by a training driver: every process it starts (Ray's) inherits it


def interval_s() -> float:
    return float(os.environ.get(INTERVAL_ENV) or DEFAULT_INTERVAL_S)


def dead_since(status: str, start_s: float, tags: Mapping[str, str], now: float) -> float | None:
    """When a RUNNING run stopped beating (epoch seconds), or None while it is alive (or not RUNNING).

    A run without a beat (started by something other than steep's driver, or before its first beat) is
    given STALE_BEATS default intervals from its start.
    """
    if status != "RUNNING":
        return None
    beat = float(tags.get(TAG) or start_s)
    every = float(tags.get(INTERVAL_TAG) or DEFAULT_INTERVAL_S)
    return beat if now - beat > STALE_BEATS * every else None


def killed_reason(died: float) -> str:
    """The `steep.killed` tag of a run that stopped beating at `died` (epoch seconds)."""
    return f"no heartbeat since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(died))}"


class Heartbeat:
    """A daemon thread that beats on one MLflow run while the `with` block runs."""

    def __init__(self, client: Any, run_id: str, every_s: float | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self.every_s = every_s or interval_s()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="steep-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.client.set_tag(self.run_id, INTERVAL_TAG, str(self.every_s))
        self.client.set_tag(self.run_id, TAG, f"{time.time():.3f}")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.client.set_tag(self.run_id, TAG, f"{time.time():.3f}")
            except Exception:  # a tracking server restarting must not stop training; the next beat retries
                continue


def mark_driver() -> None:
    """Called by a training driver before it starts Ray: Ray's processes inherit this variable, so what a
    killed driver leaves behind can be found and stopped (`reap_orphans`)."""
    os.environ[DRIVER_ENV] = str(os.getpid())


def orphans() -> list[psutil.Process]:
    """Processes a training driver started whose driver is gone (SIGKILL, OOM killer)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, ValueError):
            driver = proc.environ().get(DRIVER_ENV)
            if driver and int(driver) != proc.pid and not psutil.pid_exists(int(driver)):
                found.append(proc)
    return found


def reap_orphans(grace: float = 5.0) -> int:
    """Stop what dead drivers left running (SIGTERM, then SIGKILL); -> how many processes."""
    procs = orphans()
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return len(procs)
