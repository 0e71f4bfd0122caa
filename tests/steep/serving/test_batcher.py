"""The batcher: rows that wait are batched together, stale rows are refused, a failing batch fails alone."""

from __future__ import annotations

import threading
import time

import pytest

from steep.serving.batcher import Batcher, Overloaded, Row

WAIT = 10  # seconds a test waits for the batcher thread before it fails


class Answers:
    """Each row's answer (a result or an exception), and a way to wait for them."""

    def __init__(self) -> None:
        self.results: dict[str, object] = {}
        self._lock = threading.Condition()

    def row(self, text: str, received: float | None = None) -> Row:
        def done(model, result) -> None:
            with self._lock:
                self.results[text] = result
                self._lock.notify_all()

        row = Row(text, "req", {}, done)
        if received is not None:
            row.received = received
        return row

    def wait(self, *texts: str) -> list[object]:
        with self._lock:
            assert self._lock.wait_for(lambda: set(texts) <= set(self.results), timeout=WAIT), self.results
            return [self.results[t] for t in texts]


class Model:
    """A run_batch that records its batches, answers each row with its text upper-cased, and can be held."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, rows: list[Row]) -> None:
        self.batches.append([r.text for r in rows])
        self.started.set()
        assert self.release.wait(WAIT)
        if any(r.text == "boom" for r in rows):
            raise RuntimeError("the model broke")
        for r in rows:
            r.done("model", r.text.upper())


@pytest.fixture
def model():
    return Model()


def test_rows_that_arrive_during_a_batch_run_together_up_to_the_batch_size(model):
    batcher = Batcher(model, max_batch_size=3, max_wait_s=60)
    answers = Answers()
    try:
        model.release.clear()
        batcher.submit([answers.row("first")])
        assert model.started.wait(WAIT)  # the first row runs alone: an idle batcher does not wait
        batcher.submit([answers.row(t) for t in ("a", "b", "c", "d", "e")])
        model.release.set()
        assert answers.wait("first", "a", "e") == ["FIRST", "A", "E"]
        assert model.batches == [["first"], ["a", "b", "c"], ["d", "e"]]
    finally:
        batcher.close()


def test_a_row_that_waited_too_long_is_refused_and_never_generated(model):
    batcher = Batcher(model, max_batch_size=8, max_wait_s=5)
    answers = Answers()
    try:
        batcher.submit([answers.row("stale", received=time.perf_counter() - 60), answers.row("fresh")])
        stale, fresh = answers.wait("stale", "fresh")
        assert isinstance(stale, Overloaded) and "max_latency_ms (5000 ms)" in str(stale)
        assert fresh == "FRESH" and model.batches == [["fresh"]]
        batcher.submit([answers.row("alone stale", received=time.perf_counter() - 60)])
        assert isinstance(answers.wait("alone stale")[0], Overloaded)
        batcher.submit([answers.row("later")])
        assert answers.wait("later") == ["LATER"]
        assert model.batches == [["fresh"], ["later"]]  # a batch of stale rows only never runs
    finally:
        batcher.close()


def test_a_failing_batch_fails_its_own_rows_and_the_next_batch_runs(model):
    batcher = Batcher(model, max_batch_size=8, max_wait_s=60)
    answers = Answers()
    try:
        model.release.clear()
        batcher.submit([answers.row("held")])
        assert model.started.wait(WAIT)
        batcher.submit([answers.row("boom"), answers.row("beside it")])  # queued: one batch next
        model.release.set()
        boom, beside = answers.wait("boom", "beside it")
        assert isinstance(boom, RuntimeError) and beside is boom
        batcher.submit([answers.row("next")])
        assert answers.wait("held", "next") == ["HELD", "NEXT"]
        assert model.batches == [["held"], ["boom", "beside it"], ["next"]]
    finally:
        batcher.close()


def test_close_answers_the_rows_already_queued_then_stops_the_thread(model):
    batcher = Batcher(model, max_batch_size=8, max_wait_s=60)
    answers = Answers()
    model.release.clear()
    batcher.submit([answers.row("running")])
    assert model.started.wait(WAIT)
    batcher.submit([answers.row("queued")])
    closing = threading.Thread(target=batcher.close)
    closing.start()
    model.release.set()
    closing.join(WAIT)
    assert answers.wait("running", "queued") == ["RUNNING", "QUEUED"]
    assert not closing.is_alive() and not batcher._thread.is_alive()
