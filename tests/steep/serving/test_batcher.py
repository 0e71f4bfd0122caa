"""The batcher: rows join the running batch between two decoding steps (up to max_batch_size), a stale batch
takes no more rows and drains, late rows are refused, a failing step fails its own batch alone."""

from __future__ import annotations

import threading
import time

import pytest

from steep.serving.batcher import Batcher, Overloaded, Row

WAIT = 10  # seconds a test waits for the batcher thread before it fails


class Answers:
    """Each row's answer (model, result), and a way to wait for them."""

    def __init__(self) -> None:
        self.results: dict[str, tuple[object, object]] = {}
        self.order: list[str] = []
        self._lock = threading.Condition()

    def row(self, text: str, steps: int = 1, received: float | None = None) -> Row:
        def done(model, result) -> None:
            with self._lock:
                self.results[text] = (model, result)
                self.order.append(text)
                self._lock.notify_all()

        row = Row(text, "req", {"steps": steps}, done)
        if received is not None:
            row.received = received
        return row

    def wait(self, *texts: str) -> list[object]:
        """The results of these rows (not their models), once all of them are answered."""
        with self._lock:
            assert self._lock.wait_for(lambda: set(texts) <= set(self.results), timeout=WAIT), self.results
            return [self.results[t][1] for t in texts]

    def model(self, text: str) -> object:
        self.wait(text)
        return self.results[text][0]


class Model:
    """Opens FakeBatches on the version served now; records what every batch did; can hold a step."""

    def __init__(self) -> None:
        self.version = "1"
        self.opened = 0
        self.steps: list[tuple[str, list[str]]] = []  # (version, the rows decoding) per step with rows
        self.added: list[str] = []
        self.started = threading.Event()  # a step began
        self.release = threading.Event()  # steps may go on
        self.release.set()

    def __call__(self) -> FakeBatch:
        self.opened += 1
        return FakeBatch(self, self.version)


class FakeBatch:
    """A RunningBatch: a row takes settings["steps"] steps and is answered with its text upper-cased.

    A row "boom" makes the step that would answer it raise; a row "bad" cannot be admitted.
    """

    def __init__(self, model: Model, version: str) -> None:
        self.model = model
        self.version = version
        self.rows: dict[str, tuple[Row, int]] = {}  # text -> (row, steps left)

    @property
    def size(self) -> int:
        return len(self.rows)

    def stale(self) -> bool:
        return self.model.version != self.version

    def add(self, row: Row) -> None:
        if row.text == "bad":
            raise ValueError("this prompt cannot be taken")
        self.model.added.append(row.text)
        self.rows[row.text] = (row, row.settings["steps"])

    def step(self) -> None:
        if self.rows:
            self.model.steps.append((self.version, list(self.rows)))
        self.model.started.set()
        assert self.model.release.wait(WAIT)
        for text, (row, left) in list(self.rows.items()):
            if left == 1 and text.startswith("boom"):
                raise RuntimeError("the model broke")
            if left == 1:
                del self.rows[text]
                row.done(f"v{self.version}", text.upper())
            else:
                self.rows[text] = (row, left - 1)

    def fail(self, error: Exception) -> None:
        for row, _ in self.rows.values():
            row.done(f"v{self.version}", error)
        self.rows.clear()


@pytest.fixture
def model():
    return Model()


@pytest.fixture
def batcher_of(model):
    made: list[Batcher] = []

    def make(
        max_batch_size: int = 8, max_wait_s: float = 60, prefills_per_step: int | None = None
    ) -> Batcher:
        made.append(Batcher(model, max_batch_size, max_wait_s, prefills_per_step=prefills_per_step))
        return made[-1]

    yield make
    model.release.set()
    for batcher in made:
        batcher.close()


def hold_first_step(model: Model, batcher: Batcher, row: Row) -> None:
    """Submit a row and return while its first decoding step is held (the batch is running)."""
    model.release.clear()
    batcher.submit([row])
    assert model.started.wait(WAIT)  # an idle batcher starts at once, it does not wait for more rows


# ------------------------------------------------------------------------------------ admission
def test_a_row_that_arrives_while_a_batch_decodes_joins_it_at_the_next_step(model, batcher_of):
    batcher = batcher_of()
    answers = Answers()
    hold_first_step(model, batcher, answers.row("long", steps=4))
    batcher.submit([answers.row("late")])
    model.release.set()
    assert answers.wait("late", "long") == ["LATE", "LONG"]
    assert model.steps == [("1", ["long"]), ("1", ["long", "late"]), ("1", ["long"]), ("1", ["long"])]
    assert answers.order == ["late", "long"]  # answered as soon as it finished, not when the batch did
    assert model.opened == 1


def test_max_batch_size_caps_the_rows_decoding_together(model, batcher_of):
    batcher = batcher_of(max_batch_size=3)
    answers = Answers()
    hold_first_step(model, batcher, answers.row("first", steps=3))
    batcher.submit([answers.row(t) for t in ("a", "b", "c", "d", "e")])
    model.release.set()
    assert answers.wait("first", "a", "e") == ["FIRST", "A", "E"]
    assert [rows for _, rows in model.steps] == [
        ["first"],
        ["first", "a", "b"],
        ["first", "c", "d"],
        ["e"],  # the batch emptied: the next one starts with what waits
    ]
    assert model.opened == 2


def test_a_burst_joins_a_few_rows_a_step_while_others_decode(model, batcher_of):
    """Each admitted row is a prefill: a burst admitted at once would stall the rows already streaming."""
    batcher = batcher_of(max_batch_size=8, prefills_per_step=2)
    answers = Answers()
    hold_first_step(model, batcher, answers.row("first", steps=4))
    batcher.submit([answers.row(t, steps=4) for t in ("a", "b", "c", "d", "e")])
    model.release.set()
    answers.wait("first", "a", "b", "c", "d", "e")
    assert [rows for _, rows in model.steps][:4] == [
        ["first"],
        ["first", "a", "b"],
        ["first", "a", "b", "c", "d"],
        ["first", "a", "b", "c", "d", "e"],
    ]


def test_an_idle_batch_takes_a_whole_burst_at_once(model, batcher_of):
    batcher = batcher_of(max_batch_size=8, prefills_per_step=2)
    answers = Answers()
    hold_first_step(model, batcher, answers.row("first", steps=1))
    batcher.submit([answers.row(t) for t in ("a", "b", "c", "d")])
    model.release.set()
    answers.wait("first", "a", "b", "c", "d")
    assert [rows for _, rows in model.steps] == [["first"], ["a", "b", "c", "d"]]


def test_a_row_that_cannot_be_admitted_fails_alone(model, batcher_of):
    batcher = batcher_of()
    answers = Answers()
    hold_first_step(model, batcher, answers.row("running", steps=2))
    batcher.submit([answers.row("bad"), answers.row("good")])
    model.release.set()
    bad, good, running = answers.wait("bad", "good", "running")
    assert isinstance(bad, ValueError) and (good, running) == ("GOOD", "RUNNING")


def test_a_batch_that_cannot_be_opened_fails_its_first_row_and_the_next_one_opens(model, batcher_of):
    batcher = batcher_of()
    answers = Answers()
    opened = model.__call__
    calls = []

    def flaky() -> FakeBatch:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("no model yet")
        return opened()

    batcher.open_batch = flaky
    batcher.submit([answers.row("first")])
    assert isinstance(answers.wait("first")[0], RuntimeError)
    batcher.submit([answers.row("second")])
    assert answers.wait("second") == ["SECOND"]


# ------------------------------------------------------------------------------------ hot swap
def test_a_stale_batch_admits_nothing_more_and_the_held_rows_run_on_the_next_batch(model, batcher_of):
    batcher = batcher_of()
    answers = Answers()
    hold_first_step(model, batcher, answers.row("old", steps=3))
    model.version = "2"  # the hot swap: the running batch keeps its model and drains
    batcher.submit([answers.row("new one"), answers.row("new two")])
    model.release.set()
    assert answers.wait("old", "new one", "new two") == ["OLD", "NEW ONE", "NEW TWO"]
    assert model.steps == [
        ("1", ["old"]),
        ("1", ["old"]),
        ("1", ["old"]),
        ("2", ["new one", "new two"]),
    ]
    assert [answers.model(t) for t in ("old", "new one", "new two")] == ["v1", "v2", "v2"]
    assert answers.order == ["old", "new one", "new two"]


# ------------------------------------------------------------------------------------ refusals, failures
def test_a_row_that_waited_too_long_is_refused_and_never_generated(model, batcher_of):
    batcher = batcher_of(max_wait_s=5)
    answers = Answers()
    batcher.submit([answers.row("stale", received=time.perf_counter() - 60), answers.row("fresh")])
    stale, fresh = answers.wait("stale", "fresh")
    assert isinstance(stale, Overloaded) and "max_latency_ms (5000 ms)" in str(stale)
    assert fresh == "FRESH" and model.added == ["fresh"]
    batcher.submit([answers.row("alone stale", received=time.perf_counter() - 60)])
    assert isinstance(answers.wait("alone stale")[0], Overloaded)
    batcher.submit([answers.row("later")])
    assert answers.wait("later") == ["LATER"]
    assert model.added == ["fresh", "later"]  # a late row is never added to a batch
    assert [rows for _, rows in model.steps] == [["fresh"], ["later"]]


def test_a_late_row_is_refused_when_a_running_batch_would_admit_it(model, batcher_of):
    batcher = batcher_of(max_wait_s=5)
    answers = Answers()
    hold_first_step(model, batcher, answers.row("running", steps=2))
    batcher.submit([answers.row("late", received=time.perf_counter() - 60), answers.row("on time")])
    model.release.set()
    late, on_time, running = answers.wait("late", "on time", "running")
    assert isinstance(late, Overloaded) and (on_time, running) == ("ON TIME", "RUNNING")
    assert "late" not in model.added


def test_a_failing_step_fails_its_own_batch_and_the_server_goes_on(model, batcher_of):
    batcher = batcher_of(max_batch_size=2)
    answers = Answers()
    hold_first_step(model, batcher, answers.row("boom", steps=2))  # its second step raises
    batcher.submit([answers.row("beside it", steps=5), answers.row("waiting")])
    model.release.set()
    boom, beside, waiting = answers.wait("boom", "beside it", "waiting")
    assert isinstance(boom, RuntimeError) and beside is boom  # the rows in the broken batch
    assert waiting == "WAITING"  # the row that had no room yet runs on the next batch
    batcher.submit([answers.row("next")])
    assert answers.wait("next") == ["NEXT"]
    assert [rows for _, rows in model.steps] == [
        ["boom"],
        ["boom", "beside it"],
        ["waiting"],
        ["next"],
    ]


def test_close_answers_the_rows_already_queued_then_stops_the_thread(model):
    batcher = Batcher(model, max_batch_size=8, max_wait_s=60)
    answers = Answers()
    hold_first_step(model, batcher, answers.row("running", steps=2))
    batcher.submit([answers.row("queued", steps=3)])
    closing = threading.Thread(target=batcher.close)
    closing.start()
    model.release.set()
    closing.join(WAIT)
    assert answers.wait("running", "queued") == ["RUNNING", "QUEUED"]
    assert not closing.is_alive() and not batcher._thread.is_alive()
