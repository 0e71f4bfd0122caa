"""The server's batching: rows from every endpoint wait in one queue, and one thread generates.

Whenever the model is free, the thread takes every row waiting (up to `serving.max_batch_size`) and runs
them as one batch, so under load batches fill by themselves and an idle server answers at once. A row that
waited longer than `serving.max_latency_ms` before its batch started is refused (503) instead of generated.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from steep.serving import ServingError

log = logging.getLogger("steep.serving")


class Overloaded(ServingError):
    """The server could not start this request within serving.max_latency_ms: try again later (503)."""


@dataclass
class Row:
    """One text to generate for, with where its answer goes; a request with several texts has several rows."""

    text: str
    request_id: str
    settings: dict[str, Any]  # steep.generation.Request fields: max_new_tokens, temperature, top_p, stop
    done: Callable[[Any, Any], None]  # (the LoadedModel that ran it, a Completion or an exception)
    on_text: Callable[[str], None] | None = None
    version: str | None = None  # the request named this model version: refuse another one
    received: float = field(default_factory=time.perf_counter)


class Batcher:
    """A queue of rows and the one thread that runs them, `run_batch(rows)` at a time."""

    def __init__(
        self, run_batch: Callable[[list[Row]], None], max_batch_size: int, max_wait_s: float
    ) -> None:
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._queue: queue.SimpleQueue[Row | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="steep-batcher", daemon=True)
        self._thread.start()

    def submit(self, rows: list[Row]) -> None:
        for row in rows:
            self._queue.put(row)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _next_batch(self) -> list[Row] | None:
        """Block for one row, then take whatever else waits, up to max_batch_size."""
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self.max_batch_size:
            try:
                row = self._queue.get_nowait()
            except queue.Empty:
                break
            if row is None:
                self._queue.put(None)  # finish this batch, then stop
                break
            batch.append(row)
        return batch

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            now = time.perf_counter()
            fresh = [r for r in batch if now - r.received <= self.max_wait_s]
            for row in (r for r in batch if now - r.received > self.max_wait_s):
                row.done(
                    None,
                    Overloaded(
                        f"the server is busy: this request waited {now - row.received:.1f} s, over "
                        f"serving.max_latency_ms ({self.max_wait_s * 1000:.0f} ms); retry later"
                    ),
                )
            if not fresh:
                continue
            try:
                self.run_batch(fresh)
            except Exception as exc:  # a broken batch fails its own rows, never the server
                log.exception("a batch of %d rows failed", len(fresh))
                for row in fresh:
                    row.done(None, exc)
