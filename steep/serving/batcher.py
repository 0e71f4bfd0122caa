"""The server's batching: rows from every endpoint wait in one queue, and one thread generates.

Iteration-level batching: between two decoding steps the thread admits waiting rows while the batch has room
(`serving.max_batch_size`), at most `serving.prefills_per_step` of them while other rows decode, so a burst of
new requests (each a prefill) never stalls the rows already streaming; a row leaves as soon as it is finished.
Under load the batch stays full; an idle server answers at once. A row that waited longer than
`serving.max_latency_ms` before it was admitted is refused (503) instead of generated.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

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
    answered: float | None = None


class RunningBatch(Protocol):
    """Rows generating together on one model snapshot (steep.serving.engine.EngineBatch)."""

    size: int

    def add(self, row: Row) -> None: ...  # admit a row (its prefill); may answer it at once

    def step(self) -> None: ...  # one decoding step; answers the rows that finished

    def fail(self, error: Exception) -> None: ...  # answer every row still in it with the error

    def stale(self) -> bool: ...  # the served model moved on: admit nothing more, drain


class Batcher:
    """A queue of rows and the one thread that generates them, one decoding step at a time.

    Between two steps the thread admits waiting rows while the batch has room (`max_batch_size`), so a
    request never waits for a whole batch to finish, and rows that finished leave at once. When the served
    model moved (a hot swap), the running batch takes nothing more and finishes; the next one starts on the
    new model.
    """

    def __init__(
        self,
        open_batch: Callable[[], RunningBatch],
        max_batch_size: int,
        max_wait_s: float,
        prefills_per_step: int | None = None,
    ) -> None:
        self.open_batch = open_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.prefills_per_step = prefills_per_step or max_batch_size  # rows admitted between two steps
        self._queue: queue.SimpleQueue[Row | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="steep-batcher", daemon=True)
        self._thread.start()

    def submit(self, rows: list[Row]) -> None:
        for row in rows:
            self._queue.put(row)

    def close(self) -> None:
        """Answer the rows already queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        batch: RunningBatch | None = None
        held: Row | None = None  # taken from the queue while the running batch was stale
        stopping = False
        while True:
            decoding = 0 if batch is None else batch.size  # rows that already took a step
            if batch is None or batch.size == 0:
                if stopping:
                    return
                row = held or self._queue.get()  # idle: wait for work
                held = None
                if row is None:
                    return
                batch = self._started(row)
                if batch is None:
                    continue
            admitted = 0
            while not stopping and held is None and batch.size < self.max_batch_size:
                if decoding and admitted >= self.prefills_per_step:
                    break  # others are decoding: their next step comes first
                try:
                    row = self._queue.get_nowait()
                except queue.Empty:
                    break
                if row is None:
                    stopping = True  # finish what runs, then stop
                elif batch.stale():
                    held = row
                else:
                    self._admit(batch, row)
                    admitted += 1
            try:
                batch.step()
            except Exception as exc:  # a broken step fails its own rows, never the server
                log.exception("a batch of %d rows failed", batch.size)
                batch.fail(exc)
                batch = None

    def _started(self, row: Row) -> RunningBatch | None:
        """A batch on the model served now, with its first row; None when that row was refused."""
        try:
            batch = self.open_batch()
        except Exception as exc:
            row.done(None, exc)
            return None
        self._admit(batch, row)
        return batch

    def _admit(self, batch: RunningBatch, row: Row) -> None:
        waited = time.perf_counter() - row.received
        if waited > self.max_wait_s:
            row.done(
                None,
                Overloaded(
                    f"the server is busy: this request waited {waited:.1f} s, over serving.max_latency_ms "
                    f"({self.max_wait_s * 1000:.0f} ms); retry later"
                ),
            )
            return
        try:
            batch.add(row)
        except Exception as exc:  # e.g. a prompt the model cannot take: this row alone fails
            log.exception("admitting a row failed")
            row.done(None, exc)
