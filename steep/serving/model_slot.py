"""The served model and its hot swap: a slot that follows a registry alias (or pins a version).

The server polls the registry; when the alias moves, the new version loads beside the old one and one
reference assignment swaps them, so a batch finishes on the model it started with and no request is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from steep.config import SteepConfig, parse_duration
from steep.endpoints import Runtime
from steep.engines import published
from steep.models import engines_cache
from steep.registry import Registry
from steep.serving import ServingError

log = logging.getLogger("steep.serving")


@dataclass(frozen=True)
class LoadedModel:
    """A registry version loaded into memory; what one batch generates with from start to end."""

    name: str
    version: str
    run_id: str
    summarizer: (
        Any  # steep.models.Summarizer (or a stand-in in tests): request(text, ...) and generate(requests)
    )


class ModelSlot:
    """The served model and its hot swap.

    `refresh()` asks the registry which version the selector (an alias or a version number) names; when it
    moved, the new version is loaded while the old one keeps serving, then one reference assignment swaps
    them. A batch reads `current` once, so it finishes on the model it started with and nothing is dropped.
    """

    def __init__(
        self,
        resolve: Callable[[], tuple[str, str]],
        load: Callable[[str], LoadedModel],
        interval_s: float = 30.0,
    ) -> None:
        self._resolve = resolve
        self._load = load
        self.interval_s = interval_s
        self._current: LoadedModel | None = None
        self._failed: str | None = None
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.swaps = 0

    @property
    def current(self) -> LoadedModel:
        model = self._current
        if model is None:
            raise ServingError("no model loaded yet; the server is still starting (see GET /readyz)")
        return model

    @property
    def ready(self) -> bool:
        return self._current is not None

    def refresh(self) -> bool:
        """Load and swap in the version the selector names now; True when the served model changed."""
        with self._refresh_lock:
            _, version = self._resolve()
            now = self._current
            if (now is not None and now.version == version) or version == self._failed:
                return False
            try:
                loaded = self._load(version)
            except Exception:
                self._failed = version  # a broken version is not reloaded every poll; the old one serves on
                if now is None:
                    raise
                log.exception(
                    "loading model version %s failed; still serving version %s", version, now.version
                )
                return False
            self._current = loaded
            self._failed = None
            if now is not None:
                self.swaps += 1
                log.info("hot swap: model version %s -> %s", now.version, loaded.version)
            return True

    def start(self) -> None:
        """Poll the registry in a daemon thread (loading happens there too, never on a request)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._poll, name="steep-model-watch", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.refresh()
            except Exception:
                log.exception("checking the registry for a new model version failed; will retry")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def registry_slot(cfg: SteepConfig, selector: str | None = None) -> ModelSlot:
    """A ModelSlot over the MLflow registry of cfg, serving `selector` (default serving.model_alias)."""
    registry = Runtime.of(cfg).registry()
    selector = selector or cfg.serving.model_alias

    def resolve() -> tuple[str, str]:
        return registry.name, resolve_version(registry, selector)

    def load(version: str) -> LoadedModel:
        mv = registry.version(version)
        started = time.perf_counter()
        # the Summarizer inside steep's pyfunc, prepared as evaluation prepares it (scoring.pyfunc_summarizer)
        import mlflow.pyfunc

        if cfg.serving.engine != "transformers" and mv.run_id:
            published.fetch(mv.run_id, engines_cache(cfg))  # the export the gate evaluated: never re-export
        pyfunc = mlflow.pyfunc.load_model(f"models:/{registry.name}/{version}")
        summarizer = pyfunc.unwrap_python_model().summarizer.prepare_as_served(cfg)
        log.info(
            "loaded %s v%s (%s on %s) in %.1f s",
            registry.name,
            version,
            summarizer.precision,
            summarizer.engine,
            time.perf_counter() - started,
        )
        return LoadedModel(registry.name, str(mv.version), mv.run_id or "", summarizer)

    return ModelSlot(resolve, load, parse_duration(cfg.serving.poll_interval))


def resolve_version(registry: Registry, selector: str) -> str:
    """An alias or a version number -> the version number; a clear error when it names nothing."""
    if str(selector).isdigit():
        return str(registry.version(selector).version)
    mv = registry.alias(selector)
    if mv is None:
        raise ServingError(
            f"model {registry.name} has no version with alias {selector!r} (serving.model_alias). "
            "Run `steep run` to train and register one, or `steep models promote VERSION`."
        )
    return str(mv.version)
