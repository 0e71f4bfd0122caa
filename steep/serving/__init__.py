"""Serving: request validation, the served model and its hot swap, the inference log, the API-key gate.

The BentoML service in bentos/summarizer is a thin shell over this module, so everything here is a plain
function or class that tests can drive without a server. Validation lives in the request types: BentoML checks
them per request before adaptive batching, so one bad request is refused alone and never fails a batch.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, StringConstraints, ValidationError

from steep.config import ServingConfig, SteepConfig, apply_overrides, load_config, parse_duration
from steep.errors import SteepError

log = logging.getLogger("steep.serving")

CONFIG_ENV = "STEEP_SERVING_CONFIG"  # the resolved config as JSON, or a path to a steep.yaml
CONFIG_ARG = "steep_config"  # the same JSON as a bento argument, baked in by `steep package`
API_KEY_HEADER = "x-api-key"
OPEN_PATHS = frozenset({"/", "/healthz", "/livez", "/readyz", "/metrics", "/docs", "/docs.json"})
OPEN_PREFIXES = ("/static_content/",)


class ServingError(SteepError):
    """The server cannot start or serve as configured; the message says what to change."""


# --------------------------------------------------------------------------------------------- config
def config_env(cfg: SteepConfig) -> str:
    """The value of CONFIG_ENV that hands a resolved config (file + overrides) to the server process."""
    return json.dumps(cfg.model_dump(mode="json"), separators=(",", ":"))


def service_config(
    environ: dict[str, str] | None = None, arguments: dict[str, Any] | None = None
) -> SteepConfig:
    """The config the server runs with: the bento argument CONFIG_ARG (a packaged model), else CONFIG_ENV
    (JSON or a file path, set by `steep serve`), else ./steep.yaml. STEEP__SECTION__KEY variables override
    each (a container sets STEEP__PROJECT__HOME to its volume)."""
    environ = os.environ if environ is None else environ
    baked = (arguments or {}).get(CONFIG_ARG) or environ.get(CONFIG_ENV, "").strip()
    if isinstance(baked, str) and not baked.startswith("{"):
        return load_config(baked or None, environ=environ)
    data = json.loads(baked) if isinstance(baked, str) else dict(baked)
    apply_overrides(data, environ=environ)
    try:
        return SteepConfig.model_validate(data)
    except ValidationError as exc:
        raise ServingError(f"the server's config is invalid: {exc}") from exc


# --------------------------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class Item:
    """One validated text with the request it came in: batching mixes requests, the log keeps them apart."""

    text: str
    request_id: str
    received: float = field(default_factory=time.perf_counter)


class Summary(BaseModel):
    summary: str
    model_name: str
    model_version: str
    run_id: str
    request_id: str


def _one_or_many(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"texts must be a string or a list of strings, got {type(value).__name__}")
    return value


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("blank text: every text needs at least one non-space character")
    return text


def _tag_request(texts: list[str]) -> list[Item]:
    request_id = uuid.uuid4().hex
    return [Item(text, request_id) for text in texts]


def texts_type(serving: ServingConfig) -> Any:
    """The type of the `texts` field: one string or a non-empty list of non-blank strings, capped by config.

    Strict strings: a number or an object is refused, not turned into text.
    """
    text = Annotated[
        str,
        StringConstraints(strict=True, max_length=serving.max_text_chars),
        AfterValidator(_not_blank),
    ]
    return Annotated[
        list[text],  # type: ignore[valid-type]
        BeforeValidator(_one_or_many),
        Field(
            min_length=1,
            max_length=serving.max_texts,
            description=f"one text, or a list of 1 to {serving.max_texts} texts of at most "
            f"{serving.max_text_chars} characters each",
        ),
        AfterValidator(_tag_request),
    ]


def as_items(texts: Iterable[Item | str]) -> list[Item]:
    """Items as they come from the HTTP layer; plain strings (an in-process call) get one request id."""
    texts = list(texts)
    request_id = uuid.uuid4().hex
    return [t if isinstance(t, Item) else Item(str(t), request_id) for t in texts]


# --------------------------------------------------------------------------------------------- models
@dataclass(frozen=True)
class LoadedModel:
    """A registry version loaded into memory; what one batch generates with from start to end."""

    name: str
    version: str
    run_id: str
    summarizer: Any


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


def tracking_uri(cfg: SteepConfig, environ: dict[str, str] | None = None) -> str | None:
    """MLFLOW_TRACKING_URI (a container's setting) first, then the provisioned stack, else the embedded db."""
    environ = os.environ if environ is None else environ
    if environ.get("MLFLOW_TRACKING_URI"):
        return environ["MLFLOW_TRACKING_URI"]
    from steep.stack import current

    stack = current(cfg)
    return stack.mlflow_tracking_uri if stack else None


def registry_slot(cfg: SteepConfig, selector: str | None = None) -> ModelSlot:
    """A ModelSlot over the MLflow registry of cfg, serving `selector` (default serving.model_alias)."""
    from steep import tracking
    from steep.registry import Registry, model_name

    tracking.setup(cfg, tracking_uri(cfg))
    registry = Registry(model_name(cfg))
    selector = selector or cfg.serving.model_alias

    def resolve() -> tuple[str, str]:
        return registry.name, resolve_version(registry, selector)

    def load(version: str) -> LoadedModel:
        import mlflow.pyfunc

        mv = registry.version(version)
        started = time.perf_counter()
        # the Summarizer inside steep's pyfunc, as ray_jobs.evaluate scores it (not imported: it needs ROUGE)
        pyfunc = mlflow.pyfunc.load_model(f"models:/{registry.name}/{version}")
        summarizer = pyfunc.unwrap_python_model().summarizer
        log.info("loaded %s v%s in %.1f s", registry.name, version, time.perf_counter() - started)
        return LoadedModel(registry.name, str(mv.version), mv.run_id or "", summarizer)

    return ModelSlot(resolve, load, parse_duration(cfg.serving.poll_interval))


def resolve_version(registry: Any, selector: str) -> str:
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


# --------------------------------------------------------------------------------------------- engine
class Engine:
    """What the service does per batch: generate with one model snapshot, answer, append to the log."""

    def __init__(self, cfg: SteepConfig, slot: ModelSlot, inference_log: Any | None = None) -> None:
        from steep.inference_log import InferenceLog

        self.cfg = cfg
        self.slot = slot
        self.log = inference_log or InferenceLog.for_config(cfg)

    @classmethod
    def from_config(cls, cfg: SteepConfig) -> Engine:
        slot = registry_slot(cfg)
        slot.refresh()
        slot.start()
        return cls(cfg, slot)

    def summarize(self, texts: Iterable[Item | str]) -> list[Summary]:
        from steep.inference_log import record

        items = as_items(texts)
        if not items:
            return []
        model = self.slot.current  # one snapshot for the whole batch: a swap mid-batch changes nothing here
        serving = self.cfg.serving
        summaries = model.summarizer.summarize(
            [i.text for i in items], max_new_tokens=serving.max_new_tokens, batch_size=serving.max_batch_size
        )
        done = time.perf_counter()
        rows = [
            record(
                item.text,
                summary,
                model_name=model.name,
                model_version=model.version,
                run_id=model.run_id,
                request_id=item.request_id,
                latency_ms=(done - item.received) * 1000,
                log_texts=serving.log_texts,
                salt=self.log.salt,
            )
            for item, summary in zip(items, summaries, strict=True)
        ]
        try:
            self.log.append(rows)
        except OSError:
            log.exception("could not append %d rows to the inference log at %s", len(rows), self.log.root)
        return [
            Summary(
                summary=summary,
                model_name=model.name,
                model_version=model.version,
                run_id=model.run_id,
                request_id=item.request_id,
            )
            for item, summary in zip(items, summaries, strict=True)
        ]

    def close(self) -> None:
        self.slot.stop()


# --------------------------------------------------------------------------------------------- the gate
def api_key(serving: ServingConfig, environ: dict[str, str] | None = None) -> str | None:
    """The API key the server requires, or None when serving.api_key_env is unset; fails closed."""
    if not serving.api_key_env:
        return None
    environ = os.environ if environ is None else environ
    key = environ.get(serving.api_key_env, "")
    if not key:
        raise ServingError(
            f"serving.api_key_env names {serving.api_key_env}, but that variable is empty or unset: "
            f"export {serving.api_key_env}=<a secret key>, "
            "or set serving.api_key_env: null to serve without auth"
        )
    return key


def authorized(headers: dict[str, str], key: str | None) -> bool:
    """X-API-Key: KEY or Authorization: Bearer KEY, compared in constant time."""
    if key is None:
        return True
    given = headers.get(API_KEY_HEADER, "")
    bearer = headers.get("authorization", "")
    if not given and bearer.lower().startswith("bearer "):
        given = bearer[7:].strip()
    return bool(given) and hmac.compare_digest(given.encode(), key.encode())


def is_open(path: str) -> bool:
    """Health, metrics, the web page and the API docs need no key; the page itself asks for one."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class Gate:
    """ASGI middleware: the web page at `/`, the Swagger UI moved to `/docs`, and the API-key check."""

    def __init__(self, app: Any, page: Path, serving: ServingConfig) -> None:
        self.app = app
        self.key = api_key(
            serving
        )  # read when the server starts, not when `bentoml build` imports the service
        self.page = page.read_bytes()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path == "/" and scope.get("method") in ("GET", "HEAD"):
            await _respond(send, 200, self.page, "text/html; charset=utf-8")
            return
        if path == "/docs":  # BentoML's own Swagger page lives at `/`, which the web page now holds
            scope = {**scope, "path": "/", "raw_path": b"/"}
        elif not is_open(path) and self.key is not None:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if not authorized(headers, self.key):
                body = json.dumps(
                    {
                        "error": "missing or wrong API key: send it as the X-API-Key header "
                        "(or Authorization: Bearer KEY)"
                    }
                ).encode()
                await _respond(send, 401, body, "application/json", [(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)


async def _respond(
    send: Callable,
    status: int,
    body: bytes,
    content_type: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})
