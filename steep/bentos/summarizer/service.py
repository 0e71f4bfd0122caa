"""The BentoML service: steep's HTTP API (POST /summarize and the OpenAI-compatible /v1 routes) over the
registry's champion, with batching across every route and hot swap.

All behaviour lives in steep.serving; this file only declares the service to BentoML. The config comes from
the bento's `steep_config` argument (baked in by `steep package`), STEEP_SERVING_CONFIG (set by `steep serve`)
or ./steep.yaml, read once at import: the API's request limits are part of its OpenAPI document.
"""

from pathlib import Path
from typing import Any

import bentoml

from steep.quiet import quiet_third_parties
from steep.registry import model_name
from steep.serving import ServingError
from steep.serving.api import build_app
from steep.serving.engine import Engine
from steep.serving.handoff import service_config
from steep.serving.middleware import ApiKeyMiddleware, BodyLimitMiddleware, WebPageMiddleware

quiet_third_parties()  # the server is a process of its own, started by bentoml, not by steep's CLI

CONFIG = service_config(arguments=vars(bentoml.use_arguments()))
LIMITS = CONFIG.serving
BATCH_SIZES = bentoml.metrics.Histogram(
    name="steep_batch_size",
    documentation="rows generated together in one batch",
    buckets=tuple(float(2**i) for i in range(11)),
)
_engine: list[Engine] = []  # the worker's engine, created in SummarizerService.__init__


def served() -> Engine:
    if not _engine:
        raise ServingError("the server is still starting: the model is loading (see GET /readyz)")
    return _engine[0]


app = build_app(LIMITS, served, model_name(CONFIG))


def openapi_document() -> dict[str, Any]:
    """BentoML's OpenAPI document, labelled with the version it is written in: BentoML calls it 3.0.2, but
    the schemas FastAPI writes into it are OpenAPI 3.1 (JSON Schema 2020-12: `const`, `type: "null"`, numeric
    `exclusiveMinimum`), which 3.0 readers misread or reject."""
    return {**SummarizerService.openapi_spec.asdict(), "openapi": "3.1.0"}


@bentoml.asgi_app(app, path="/")
@bentoml.service(
    name="summarizer",
    workers=1,
    traffic={"timeout": max(60.0, LIMITS.max_latency_ms / 1000 * 3)},
    endpoints={"livez": "/healthz", "readyz": "/readyz"},
    http={"port": LIMITS.port},
)
class SummarizerService:
    """Summaries, each tagged with the model name, version and run that wrote it."""

    def __init__(self) -> None:
        self.engine = Engine.from_config(CONFIG, on_batch=BATCH_SIZES.observe)
        _engine[:] = [self.engine]

    def __is_ready__(self) -> bool:
        return self.engine.slot.ready

    @bentoml.on_shutdown
    def close(self) -> None:
        self.engine.close()


SummarizerService.add_asgi_middleware(
    WebPageMiddleware, page=Path(__file__).parent / "static" / "index.html", document=openapi_document
)
SummarizerService.add_asgi_middleware(ApiKeyMiddleware, serving=LIMITS)
SummarizerService.add_asgi_middleware(BodyLimitMiddleware, serving=LIMITS)
