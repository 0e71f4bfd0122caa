"""MLflow: where runs are recorded, how metrics get there without slowing a step, and the pyfunc model.

By default tracking is an embedded sqlite file under project.home (no server); a provisioned stack passes
its `mlflow_tracking_uri` instead. The trained model is logged as a pyfunc whose predict generates with
`steep.models.Summarizer`, the same code evaluation and serving use.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd

from steep.config import SteepConfig

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
MODEL_ARTIFACT = "model"
MODEL_CODE = str(Path(__file__).with_name("pyfunc_model.py"))  # the file that sets SummarizerPyfunc


def default_tracking_uri(cfg: SteepConfig) -> str:
    return f"sqlite:///{(cfg.home / DB_FILE).resolve()}"


def setup(cfg: SteepConfig, tracking_uri: str | None = None) -> str:
    """Point MLflow at the stack's URI or the embedded sqlite file; -> the experiment id (project name)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = tracking_uri or default_tracking_uri(cfg)
    if uri.startswith("sqlite:"):
        cfg.home.mkdir(parents=True, exist_ok=True)
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


def loss_plot(history: list[dict[str, float]], path: Path) -> Path:
    """The loss curve (raw and smoothed) against the optimizer step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    losses = [h["loss"] for h in history]
    smooth = pd.Series(losses).ewm(alpha=0.2).mean() if losses else []
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, alpha=0.35, label="loss")
    ax.plot(steps, smooth, label="loss (EMA)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (summary tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------- pyfunc
class SummarizerPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: texts (a DataFrame with a `text` column, a list or a string) -> summaries.

    Artifacts: `base_model` + `adapter` (a PEFT adapter folder), or `model` alone (merged or full weights).
    Params: max_new_tokens, batch_size.
    """

    def load_context(self, context: Any) -> None:
        from steep.models import load_for_inference

        artifacts = context.artifacts
        if "adapter" in artifacts:
            self.summarizer = load_for_inference(artifacts["base_model"], artifacts["adapter"])
        else:
            self.summarizer = load_for_inference(artifacts["model"])

    # Hinted pd.DataFrame: MLflow infers no schema from it (the signature stays the one log_summarizer
    # gives), validates nothing against it and passes the input through as it did without hints. Through a
    # loaded pyfunc the input is always a DataFrame (MLflow enforces the signature first); a direct call
    # may still pass a list or a string (texts_of takes all three).
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> list[str]:
        params = params or {}
        texts = texts_of(model_input)
        return self.summarizer.summarize(
            texts,
            max_new_tokens=int(params.get("max_new_tokens", 48)),
            batch_size=int(params.get("batch_size", 8)),
        )


def texts_of(model_input: Any) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        return [str(t) for t in model_input[column]]
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.Series):
        return [str(t) for t in model_input]
    return [str(t) for t in model_input]


def _requirements() -> list[str]:
    reqs = []
    for package in ("torch", "transformers", "peft", "safetensors", "tokenizers", "pandas"):
        try:
            reqs.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            reqs.append(package)
    return reqs


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def log_summarizer(
    artifacts: dict[str, str], max_new_tokens: int, staging_dir: str | Path | None = None
) -> str:
    """Log the pyfunc model to the active run; returns its model URI (models:/...).

    artifacts: {"base_model": folder, "adapter": folder} or {"model": folder}.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    import steep

    signature = ModelSignature(  # one unnamed string column: a list of texts and a `text` column both fit
        inputs=Schema([ColSpec("string")]),
        outputs=Schema([ColSpec("string")]),
        params=ParamSchema(
            [ParamSpec("max_new_tokens", "long", max_new_tokens), ParamSpec("batch_size", "long", 8)]
        ),
    )
    # MLflow names each artifact folder after its path, so stage them under their keys (hard links: no copy)
    with tempfile.TemporaryDirectory(dir=staging_dir) as tmp:
        staged = {}
        for key, path in artifacts.items():
            shutil.copytree(path, Path(tmp) / key, copy_function=_link_or_copy)
            staged[key] = str(Path(tmp) / key)
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=MODEL_CODE,  # models-from-code: the class by its import path, nothing pickled
            artifacts=staged,
            code_paths=[str(Path(steep.__file__).parent)],
            pip_requirements=_requirements(),
            signature=signature,
        )
    return info.model_uri
