"""The BentoML service: POST /summarize over the registry's champion, with adaptive batching and hot swap.

All behaviour lives in steep.serving; this file only declares the service to BentoML. The config comes from
the bento's `steep_config` argument (baked in by `steep package`), STEEP_SERVING_CONFIG (set by `steep serve`)
or ./steep.yaml, read once at import: BentoML needs the batch settings and request limits to declare
the class.
"""

from pathlib import Path

import bentoml

from steep.quiet import quiet_third_parties
from steep.serving.engine import Engine
from steep.serving.handoff import service_config
from steep.serving.middleware import ApiKeyMiddleware, WebPageMiddleware
from steep.serving.schema import Summary, texts_type

quiet_third_parties()  # the server is a process of its own, started by bentoml, not by steep's CLI

CONFIG = service_config(arguments=vars(bentoml.use_arguments()))
LIMITS = CONFIG.serving
Texts = texts_type(LIMITS)


@bentoml.service(
    name="summarizer",
    workers=1,
    traffic={"timeout": max(60.0, LIMITS.max_latency_ms / 1000 * 3)},
    endpoints={"livez": "/healthz", "readyz": "/readyz"},
    http={"port": LIMITS.port},
)
class SummarizerService:
    """Summaries of legal text, each tagged with the model name, version and run that wrote it."""

    def __init__(self) -> None:
        self.engine = Engine.from_config(CONFIG)

    @bentoml.api(
        batchable=LIMITS.max_batch_size > 1,
        max_batch_size=max(LIMITS.max_batch_size, 2),
        max_latency_ms=LIMITS.max_latency_ms,
    )
    def summarize(self, texts: Texts) -> list[Summary]:
        """One text or a list of texts -> one summary per text, in order."""
        return self.engine.summarize(texts)

    def __is_ready__(self) -> bool:
        return self.engine.slot.ready

    @bentoml.on_shutdown
    def close(self) -> None:
        self.engine.close()


SummarizerService.add_asgi_middleware(WebPageMiddleware, page=Path(__file__).parent / "static" / "index.html")
SummarizerService.add_asgi_middleware(ApiKeyMiddleware, serving=LIMITS)
