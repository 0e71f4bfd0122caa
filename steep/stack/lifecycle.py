"""TTL and idle teardown: a small watchdog process per stack that tears the stack down when it is due,
and on a local stack starts a lost Ray worker node again, as a cloud's autoscaler replaces a reclaimed
machine (a training run waiting for placement goes on once it is back).

The stack must never outlive its TTL or sit idle (no training run, no serving request) longer than
stack.idle_timeout. The watchdog is detached from the shell that provisioned, carries the stack marker
(so destroy stops it and proves it gone), and runs the same teardown sequence as `steep destroy`
(steep.stack.teardown), without Prefect: the stack layer imports no flow, and tearing down must not
depend on the orchestrator.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from steep import heartbeat, quiet
from steep.stack import daemons, teardown
from steep.stack.contract import Stack, StackError
from steep.stack.port_forward import reachable
from steep.stack.record import current, read_record

_REQUESTS = re.compile(r"^bentoml_service_request_total\{([^}]*)\}\s+([0-9.eE+-]+)", re.M)
_PROBES = re.compile(r'endpoint="/(healthz|livez|readyz|metrics)"')  # health checks are not traffic
REVIVE_EVERY_S = 5.0  # how often the watchdog looks for lost Ray worker nodes


def mlflow_activity(tracking_uri: str, timeout: float = 5.0) -> tuple[bool, float | None]:
    """(a live run is RUNNING, epoch of the latest run start/end/beat) from the tracking server's REST API.

    A RUNNING run that stopped beating (steep.heartbeat) is dead, not active: it is marked KILLED here.
    """
    try:
        exps = httpx.post(f"{tracking_uri}/api/2.0/mlflow/experiments/search", json={"max_results": 1000},
                          timeout=timeout).json().get("experiments", [])  # fmt: skip
        ids = [e["experiment_id"] for e in exps]
        if not ids:
            return False, None
        runs = (
            httpx.post(
                f"{tracking_uri}/api/2.0/mlflow/runs/search",
                json={"experiment_ids": ids, "max_results": 50, "order_by": ["attributes.start_time DESC"]},
                timeout=timeout,
            )
            .json()
            .get("runs", [])
        )
    except (httpx.HTTPError, ValueError):
        return False, None
    now = time.time()
    running = False
    stamps = [int(r["info"].get(k) or 0) / 1000 for r in runs for k in ("start_time", "end_time")]
    for run in runs:
        info = run["info"]
        tags = {t["key"]: t.get("value", "") for t in run.get("data", {}).get("tags", [])}
        started = int(info.get("start_time") or 0) / 1000
        died = heartbeat.dead_since(info.get("status", ""), started, tags, now)
        if info.get("status") == "RUNNING" and died is None:
            running = True
            stamps.append(float(tags.get(heartbeat.TAG) or 0))
        elif died is not None:
            mark_killed(tracking_uri, info["run_id"], died, timeout)
            stamps.append(died)
    return running, max(stamps, default=None) or None


def mark_killed(tracking_uri: str, run_id: str, died: float, timeout: float = 5.0) -> None:
    """A run that stopped beating: KILLED, ended at its last beat, with the reason in a tag."""
    api = f"{tracking_uri}/api/2.0/mlflow/runs"
    with contextlib.suppress(httpx.HTTPError):
        update = {"run_id": run_id, "status": "KILLED", "end_time": int(died * 1000)}
        httpx.post(f"{api}/update", json=update, timeout=timeout)
        tag = {"run_id": run_id, "key": heartbeat.KILLED_TAG, "value": heartbeat.killed_reason(died)}
        httpx.post(f"{api}/set-tag", json=tag, timeout=timeout)


def serving_requests(serving_url: str, timeout: float = 3.0) -> float | None:
    """Total requests served so far (BentoML's /metrics), or None when nothing serves."""
    try:
        text = httpx.get(f"{serving_url}/metrics", timeout=timeout).text
    except httpx.HTTPError:
        return None
    counts = [float(v) for labels, v in _REQUESTS.findall(text) if not _PROBES.search(labels)]
    return sum(counts) if counts else 0.0


def due(stack: Stack, now: float, last_active: float) -> str | None:
    """Why the stack must go now (TTL expired, or idle too long), or None."""
    left = stack.time_left(datetime.fromtimestamp(now, UTC))
    if left is not None and left.total_seconds() <= 0:
        return f"TTL expired at {stack.expires_at}"
    if stack.idle_timeout_s and now - last_active >= stack.idle_timeout_s:
        return f"idle for {int(now - last_active)}s (stack.idle_timeout {int(stack.idle_timeout_s)}s)"
    return None


class IdleTracker:
    """Keeps the last time anything happened, across checks (serving counters only tell us changes)."""

    def __init__(self, home: Path, stack: Stack):
        self.stack = stack
        self.last = datetime.fromisoformat(stack.created_at).timestamp()
        record = read_record(home) or {}
        if record.get("provisioned_at"):
            self.last = max(self.last, datetime.fromisoformat(record["provisioned_at"]).timestamp())
        self.requests: float | None = None

    def check(self, now: float) -> str | None:
        running, latest = mlflow_activity(self.stack.mlflow_tracking_uri)
        heartbeat.reap_orphans()  # what a killed training driver left running on this machine
        requests = serving_requests(self.stack.serving_url)
        if running or (requests is not None and self.requests is not None and requests != self.requests):
            self.last = now
        self.requests = requests
        if latest:
            self.last = max(self.last, latest)
        return due(self.stack, now, self.last)


def watch(home: Path, interval: float) -> str | None:
    """Loop until the stack is gone (return None) or due (tear it down, return the reason)."""
    stack = current(home)
    if stack is None:
        return None
    try:
        reached = reachable(stack)  # port-forwards on a cloud, with the recorded context
    except StackError as exc:  # the TTL needs no service: keep watching it
        print(f"cannot reach the stack's services ({exc}); the TTL still applies", flush=True)
        reached = stack
    tracker = IdleTracker(home, reached)
    next_check = 0.0
    while True:
        if current(home) is None:
            return None
        revive_lost_nodes(home)
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + interval
            reason = tracker.check(time.time())
            if reason:
                print(f"{datetime.now(UTC).isoformat()} tearing down: {reason}", flush=True)
                teardown.run(home, reason=reason, log=_print)
                return reason
        time.sleep(min(interval, REVIVE_EVERY_S))


def revive_lost_nodes(home: Path) -> list[str]:
    """Start again each Ray worker node that was lost (its processes gone, its pid file kept); -> names."""
    revived = []
    for svc in daemons.lost_ray_workers(home):
        _print(f"{datetime.now(UTC).isoformat()} {svc.name} was lost; starting it again")
        try:
            daemons.start(svc)
        except daemons.DaemonError as exc:  # its ports still held, say: the next look tries again
            _print(f"{svc.name} did not start yet: {exc}")
            continue
        revived.append(svc.name)
        _print(f"{datetime.now(UTC).isoformat()} {svc.name} joined the head again")
    return revived


def _print(line: str) -> None:
    """The watchdog's log is its stdout (logs/watchdog.log): every line at once."""
    print(line, flush=True)


def spawn_watchdog(home: Path, interval: float) -> int:
    """Start (or restart) the detached watchdog of this stack; returns its pid."""
    svc = daemons.Service("watchdog", home, "127.0.0.1", 0)
    daemons.stop(svc, grace=5.0)
    env = {**os.environ, **quiet.ENV}
    argv = [sys.executable, "-m", "steep.stack.lifecycle", "--home", str(home), "--interval", str(interval)]
    proc = daemons.spawn(svc, argv, env, cwd=home)
    return proc.pid


def watchdog_pid(home: Path) -> int | None:
    proc = daemons.read_pid(daemons.Service("watchdog", home, "127.0.0.1", 0))
    return proc.pid if proc else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m steep.stack.lifecycle")
    parser.add_argument("--home", required=True)
    parser.add_argument("--interval", type=float, default=60.0)
    args = parser.parse_args(argv)
    home = Path(args.home).resolve()
    # This process carries the marker (destroy finds and stops it); what it starts to tear down must not.
    os.environ.pop(daemons.MARKER, None)
    with contextlib.suppress(KeyboardInterrupt):
        reason = watch(home, args.interval)
        print(f"watchdog done: {reason or 'stack gone'}", flush=True)
    (home / "run" / "watchdog.pid").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
