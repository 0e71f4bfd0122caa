"""An export travels with its model version: logged with the version's run when the version is registered,
downloaded by a server that loads the version, so a server never exports what the gate already evaluated.

Exports are keyed by weights and precision (steep.engines.onnx_export.export_key): a server that finds the
key it computes among the run's `onnx/` artifacts downloads that folder into its cache; if none matches
(another precision, another builder version), it exports as evaluation did.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("steep.engines")

EXPORTS_ARTIFACT = "onnx"  # the run's artifact folder: onnx/<export key>/model.onnx, ...


def publish(folder: Path, run_id: str) -> str:
    """Log one export folder with a run; -> its artifact path."""
    import mlflow

    path = f"{EXPORTS_ARTIFACT}/{folder.name}"
    mlflow.MlflowClient().log_artifacts(run_id, str(folder), path)
    return path


def fetch(run_id: str, cache: Path) -> list[Path]:
    """Download the run's exports that the cache lacks; -> the folders now in the cache."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        listed = client.list_artifacts(run_id, EXPORTS_ARTIFACT)
        keys = [Path(item.path).name for item in listed if item.is_dir]
    except (MlflowException, OSError):  # a run without exports, or a store that lists nothing
        return []
    fetched = []
    for key in keys:
        target = cache / key
        if not target.is_dir():
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=f"{EXPORTS_ARTIFACT}/{key}", dst_path=tmp
                )
                shutil.move(local, target)
            log.info("fetched the ONNX export %s of run %s", key, run_id)
        fetched.append(target)
    return fetched
