"""What the server does with requests: batch them, generate with one model snapshot, answer, log.

Every endpoint (POST /summarize, the OpenAI-compatible /v1 routes, streaming or not) turns a request into
rows for one Batcher, so requests of every kind share batches. A batch reads the served model once: a hot
swap mid-batch changes nothing for it, and every answer names the version that wrote it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from typing import Any

from steep.config import SteepConfig
from steep.generation import Completion
from steep.inference_log import InferenceLog, record
from steep.serving import ServingError
from steep.serving.batcher import Batcher, Row
from steep.serving.model_slot import LoadedModel, ModelSlot, registry_slot
from steep.serving.summarize_schema import Item, Summary, as_items

log = logging.getLogger("steep.serving")


class ModelNotFound(ServingError):
    """The request names a model this server does not serve (404)."""


class EngineBatch:
    """Rows generating together on one model snapshot: what the Batcher steps, one token at a time.

    A hot swap never reaches a running batch: it keeps the model it started with, is `stale` from then on,
    takes no new rows and finishes; every answer names the version that wrote it.
    """

    def __init__(self, engine: Engine, model: LoadedModel) -> None:
        self.engine = engine
        self.model = model
        self.batch = model.summarizer.open_batch()
        self.rows: dict[Hashable, Row] = {}  # by id(row): the key each row has inside the generation batch
        self.answered: list[tuple[Row, Completion]] = []  # logged in groups, off the answer's path

    @property
    def size(self) -> int:
        return self.batch.size

    def stale(self) -> bool:
        return self.engine.slot.current is not self.model

    def add(self, row: Row) -> None:
        if row.version not in (None, self.model.version):
            row.done(
                self.model,
                ModelNotFound(f"version {row.version} is no longer served (now {self.model.version})"),
            )
            return
        summarizer = self.model.summarizer
        self.batch.add(id(row), summarizer.request(row.text, on_text=row.on_text, **row.settings))
        self.rows[id(row)] = row

    def step(self) -> None:
        if self.engine.on_batch is not None and self.batch.size:
            self.engine.on_batch(self.batch.size)
        for key, completion in self.batch.step():
            row = self.rows.pop(key)
            row.done(self.model, completion)
            row.answered = time.perf_counter()
            self.answered.append((row, completion))
        if len(self.answered) >= 16 or not self.rows:
            self._log_answered()

    def fail(self, error: Exception) -> None:
        for row in self.rows.values():
            row.done(self.model, error)
        self.rows.clear()
        self.batch = self.model.summarizer.open_batch()
        self._log_answered()  # the rows answered before the failure are logged all the same

    def _log_answered(self) -> None:
        if self.answered:
            rows, completions = zip(*self.answered, strict=True)
            self.answered = []
            self.engine.log(self.model, list(rows), list(completions))


class Engine:
    """The served model slot, the batcher in front of it and the inference log behind it."""

    def __init__(
        self,
        cfg: SteepConfig,
        slot: ModelSlot,
        inference_log: InferenceLog | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.slot = slot
        self.inference_log = inference_log or InferenceLog.for_config(cfg)
        self.on_batch = on_batch
        serving = cfg.serving
        self.batcher = Batcher(
            self.open_batch,
            serving.max_batch_size,
            serving.max_latency_ms / 1000,
            prefills_per_step=serving.prefills_per_step,
        )

    @classmethod
    def from_config(cls, cfg: SteepConfig, on_batch: Callable[[int], None] | None = None) -> Engine:
        """Load the model the config selects and start watching the registry for a new one."""
        slot = registry_slot(cfg)
        slot.refresh()
        slot.start()
        return cls(cfg, slot, on_batch=on_batch)

    # ------------------------------------------------------------------------------------ model names
    def model_ids(self) -> list[str]:
        """The names a request may use for the served model: `name`, `name:VERSION`, `name:ALIAS`."""
        model = self.slot.current
        alias = self.cfg.serving.model_alias
        ids = [model.name, f"{model.name}:{model.version}"]
        return ids if alias.isdigit() else [*ids, f"{model.name}:{alias}"]

    def pinned_version(self, model_id: str) -> str | None:
        """The version a model id pins (None: whatever is served); ModelNotFound for any other id."""
        if model_id not in self.model_ids():
            raise ModelNotFound(
                f"the model {model_id!r} is not served here; this server serves "
                + ", ".join(repr(i) for i in self.model_ids())
                + " (GET /v1/models lists them)"
            )
        tag = model_id.partition(":")[2]
        return tag if tag.isdigit() else None

    # ------------------------------------------------------------------------------------ batches
    def open_batch(self) -> EngineBatch:
        """A running batch on the model served now (the Batcher opens one whenever it was idle)."""
        return EngineBatch(self, self.slot.current)

    def log(self, model: LoadedModel, rows: list[Row], completions: list[Completion]) -> None:
        """Append the answered rows to the inference log (never fails a request)."""
        serving = self.cfg.serving
        now = time.perf_counter()
        entries = [
            record(
                row.text,
                completion.text,
                model_name=model.name,
                model_version=model.version,
                run_id=model.run_id,
                request_id=row.request_id,
                latency_ms=((row.answered or now) - row.received) * 1000,
                log_texts=serving.log_texts,
                salt=self.inference_log.salt,
            )
            for row, completion in zip(rows, completions, strict=True)
        ]
        try:
            self.inference_log.append(entries)
        except OSError:
            log.exception(
                "could not append %d rows to the inference log at %s", len(entries), self.inference_log.root
            )

    # ------------------------------------------------------------------------------------ async front
    def default_settings(self) -> dict[str, Any]:
        """How /summarize generates: greedy, with serving's decoding settings (what evaluation scored)."""
        serving = self.cfg.serving
        return {"max_new_tokens": serving.max_new_tokens, "repetition_penalty": serving.repetition_penalty}

    async def generate(
        self,
        texts: list[str],
        request_id: str,
        settings: dict[str, Any] | None = None,
        version: str | None = None,
    ) -> list[tuple[LoadedModel, Completion]]:
        """Every text through the batcher: per text, the model version that wrote it and its completion."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in texts]
        rows = [
            Row(text, request_id, settings or self.default_settings(), _settle(loop, fut), version=version)
            for text, fut in zip(texts, futures, strict=True)
        ]
        self.batcher.submit(rows)
        return list(await asyncio.gather(*futures))

    async def stream(
        self, text: str, request_id: str, settings: dict[str, Any], version: str | None = None
    ) -> AsyncIterator[str | tuple[LoadedModel, Completion]]:
        """The text as it is generated (str pieces), then (the model, the completion) last."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | tuple[LoadedModel, Completion] | BaseException] = asyncio.Queue()

        def done(model: LoadedModel | None, result: Completion | BaseException) -> None:
            final = result if isinstance(result, BaseException) else (model, result)
            loop.call_soon_threadsafe(pieces.put_nowait, final)

        def on_text(piece: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        self.batcher.submit([Row(text, request_id, settings, done, on_text=on_text, version=version)])
        while True:
            piece = await pieces.get()
            if isinstance(piece, BaseException):
                raise piece
            yield piece
            if isinstance(piece, tuple):
                return

    async def summarize(self, texts: Iterable[Item | str]) -> list[Summary]:
        """POST /summarize: one summary per text, each with the model identity and the request id."""
        items = as_items(texts)
        if not items:
            return []
        answers = await self.generate([i.text for i in items], items[0].request_id)
        return [
            Summary(
                summary=c.text,
                model_name=model.name,
                model_version=model.version,
                run_id=model.run_id,
                request_id=item.request_id,
            )
            for item, (model, c) in zip(items, answers, strict=True)
        ]

    def close(self) -> None:
        self.batcher.close()
        self.slot.stop()


def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future) -> Callable[[Any, Any], None]:
    """A row's `done` callback: resolve its future on the event loop (the batcher runs in its own thread)."""

    def done(model: LoadedModel | None, result: Completion | BaseException) -> None:
        def settle() -> None:
            if future.done():
                return
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result((model, result))

        loop.call_soon_threadsafe(settle)

    return done
