"""MLflow: where runs are recorded, how metrics get there without slowing a step, and how a run ends.

By default tracking is an embedded sqlite file under project.home (no server); a provisioned stack passes
its `mlflow_tracking_uri` instead. How the trained model is logged is steep.logged_model's.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import queue
import threading
import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from steep.config import SteepConfig

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"


def default_tracking_uri(cfg: SteepConfig) -> str:
    return f"sqlite:///{(cfg.home / DB_FILE).resolve()}"


def setup(cfg: SteepConfig, tracking_uri: str | None = None) -> str:
    """Point MLflow at the stack's URI or the embedded sqlite file; -> the experiment id (project name)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = tracking_uri or default_tracking_uri(cfg)
    if uri.startswith("sqlite:"):
        cfg.home.mkdir(parents=True, exist_ok=True)
    import mlflow  # late: most of a second, and `steep --help` and friends never record a run

    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(cfg.project.name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(cfg.project.name, artifact_location=artifact_location(uri))


def artifact_location(uri: str) -> str | None:
    """A local sqlite store keeps artifacts beside its database file (MLflow's default is ./mlruns in the
    working directory, wherever a command ran); a tracking server decides for itself (None)."""
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///"))
    return (database.parent / ARTIFACTS_DIR).resolve().as_uri()


@contextlib.contextmanager
def finishing(client: Any, run_id: str) -> Iterator[None]:
    """A run's end is its status: FINISHED when the block completes, KILLED on Ctrl-C (or a stop), FAILED
    on an error, which goes on up. A run nobody ends stays RUNNING in the UI forever."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        client.set_terminated(run_id, status="KILLED")
        raise
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")


def flat_params(cfg: SteepConfig) -> dict[str, str]:
    """The resolved config as dotted keys (MLflow params are flat strings, at most 6000 chars)."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else key, sub)
        else:
            out[prefix] = json.dumps(value) if isinstance(value, list) else str(value)

    walk("", cfg.model_dump(mode="json"))
    return {k: v[:6000] for k, v in out.items()}


def system_info() -> dict[str, str]:
    import torch

    info = {
        "system.python": platform.python_version(),
        "system.platform": platform.platform(),
        "system.cpu_count": str(os.cpu_count()),
        "system.cuda": str(torch.cuda.is_available()),
    }
    for package in ("torch", "transformers", "peft", "ray", "mlflow"):
        with contextlib.suppress(PackageNotFoundError):
            info[f"system.{package}"] = version(package)
    return info


class MetricLogger:
    """Logs metrics from a background thread in batches, so a slow tracking server never stalls a step."""

    def __init__(self, run_id: str, flush_seconds: float = 1.0):
        import mlflow

        self.client = mlflow.MlflowClient()
        self.run_id = run_id
        self.flush_seconds = flush_seconds
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steep-metrics", daemon=True)
        self._thread.start()

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._queue.put((metrics, step, int(time.time() * 1000)))

    def _drain(self) -> None:
        from mlflow.entities import Metric

        batch = []
        while True:
            try:
                metrics, step, ts = self._queue.get_nowait()
            except queue.Empty:
                break
            batch.extend(Metric(key, float(value), ts, step) for key, value in metrics.items())
        for start in range(0, len(batch), 1000):  # MLflow's log_batch limit
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self._drain()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._drain()
