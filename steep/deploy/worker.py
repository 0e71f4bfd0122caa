"""The local stack's Prefect worker: a process worker started as a stack daemon.

It carries the stack marker (`daemons.spawn`), so `steep destroy` sweeps it with the stack's servers.
Prefect itself runs in the worker process; this module only asks its API whether the worker is online.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from steep import quiet
from steep.config import SteepConfig
from steep.deploy.errors import DeployError
from steep.stack import daemons
from steep.stack.record import home_of

WORKER_SERVICE = "prefect-worker"


def start_worker(cfg: SteepConfig, api_url: str, pool: str, project_dir: Path, timeout: float = 60.0) -> int:
    """A process worker for pool, unless one runs already; waits until it is online; -> its pid."""
    svc = daemons.Service(WORKER_SERVICE, home_of(cfg), "127.0.0.1", 0)
    running = daemons.read_pid(svc)
    if running is not None:
        return running.pid
    prefect_home = svc.home / WORKER_SERVICE
    prefect_home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({**quiet.ENV, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(prefect_home)})
    argv = [daemons.bin_path("prefect"), "worker", "start", "--pool", pool, "--type", "process",
            "--name", f"{cfg.project.name}-worker"]  # fmt: skip
    proc = daemons.spawn(svc, argv, env, cwd=project_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if worker_online(pool, api_url):
            return proc.pid
        time.sleep(1.0)
    daemons.stop(svc)
    raise DeployError(
        f"the Prefect worker for pool {pool!r} did not come online; last lines of {svc.log_file}:\n"
        f"{daemons.tail(svc.log_file)}"
    )


def worker_online(pool: str, api_url: str) -> bool:
    """Whether the Prefect server at api_url sees an online worker for pool."""
    # Prefect inside: this process's settings are set by `steep deploy` after this module is imported
    from prefect import get_client
    from prefect.client.schemas.filters import WorkerFilter, WorkerFilterStatus
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        online = WorkerFilter(status=WorkerFilterStatus(any_=["ONLINE"]))
        return bool(client.read_workers_for_work_pool(pool, worker_filter=online))
