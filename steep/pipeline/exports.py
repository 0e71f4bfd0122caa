"""The engine's export of a registered version, logged with its run (steep.engines.published)."""

from __future__ import annotations

from steep.config import SteepConfig
from steep.engines import published
from steep.scoring.candidates import pyfunc_summarizer


def publish_export(cfg: SteepConfig, model_uri: str, run_id: str) -> str | None:
    """The version as served (its export comes from the cache evaluation filled) logged with its run, so
    servers download it instead of exporting; None when the served engine exports nothing."""
    if cfg.serving.engine == "transformers":
        return None
    summarizer = pyfunc_summarizer(model_uri, cfg)
    if summarizer.onnx is None:  # type: ignore[attr-defined]
        return None
    return published.publish(summarizer.onnx.folder, run_id)  # type: ignore[attr-defined]
