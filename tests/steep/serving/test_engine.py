"""The engine: requests of every caller share batches, each answer names the model version that wrote it,
every text goes to the inference log."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from pydantic import TypeAdapter

from steep.config import SteepConfig
from steep.drift import Sample
from steep.generation import Completion
from steep.inference_log import InferenceLog
from steep.serving.batcher import Row
from steep.serving.engine import Engine, ModelNotFound
from steep.serving.model_slot import LoadedModel, ModelSlot
from steep.serving.summarize_schema import texts_type
from tests.steep.serving.test_model_slot import FakeRegistry

WAIT = 10


class EchoSummarizer:
    """Answers each text with its first word (streamed in two pieces) and counts its words as the prompt's
    tokens; records the settings it was asked for. Its batches (EchoBatch) decode in the batcher's thread,
    where a step can be held."""

    def __init__(self) -> None:
        self.settings: list[dict] = []
        self.steps: dict[str, int] = {}  # text -> the decoding steps it takes (default 1)
        self.started = threading.Event()  # a step began
        self.release = threading.Event()  # steps may go on
        self.release.set()

    def request(self, text: str, **settings):
        self.settings.append({k: v for k, v in settings.items() if k != "on_text"})
        return text, settings.get("on_text")

    def open_batch(self) -> EchoBatch:
        return EchoBatch(self)


class EchoBatch:
    """A steep.generation.Batch of EchoSummarizer: a row is answered after its steps; "boom" breaks a step."""

    def __init__(self, summarizer: EchoSummarizer) -> None:
        self.summarizer = summarizer
        self.rows: dict[Hashable, list] = {}  # key -> [text, on_text, steps left]

    @property
    def size(self) -> int:
        return len(self.rows)

    def add(self, key: Hashable, request) -> None:
        text, on_text = request
        self.rows[key] = [text, on_text, self.summarizer.steps.get(text, 1)]

    def step(self) -> list[tuple[Hashable, Completion]]:
        self.summarizer.started.set()
        assert self.summarizer.release.wait(WAIT)
        if any(text == "boom" for text, _, _ in self.rows.values()):
            raise RuntimeError("the model broke")
        done = []
        for key, row in list(self.rows.items()):
            text, on_text, left = row
            if left > 1:
                row[2] = left - 1
                continue
            del self.rows[key]
            words = text.split()
            if on_text is not None:  # the first word in two pieces
                on_text(words[0][:2])
                on_text(words[0][2:])
            done.append((key, Completion(words[0], len(words), 1, "stop")))
        return done


class Served:
    """A slot over FakeRegistry whose versions all answer with one EchoSummarizer."""

    def __init__(self) -> None:
        self.registry = FakeRegistry()
        self.summarizer = EchoSummarizer()
        self.registry.load = self.load  # type: ignore[method-assign]
        self.slot = ModelSlot(self.registry.resolve, self.registry.load)
        self.slot.refresh()

    def load(self, version: str) -> LoadedModel:
        return LoadedModel("m", version, f"run-{version}", self.summarizer)

    def swap_to(self, version: str) -> None:
        self.registry.version = version
        assert self.slot.refresh()


@contextmanager
def engine_over(cfg: SteepConfig, served: Served | None = None, **kwargs) -> Iterator[Engine]:
    engine = Engine(cfg, (served or Served()).slot, **kwargs)
    try:
        yield engine
    finally:
        engine.close()


def config(tmp_path, **serving) -> SteepConfig:
    return SteepConfig.model_validate({"project": {"home": str(tmp_path)}, "serving": serving})


# ------------------------------------------------------------------------------------ answers and the log
@pytest.mark.parametrize("log_texts", [False, True])
def test_engine_answers_with_the_model_identity_and_logs_every_text(tmp_path, log_texts):
    cfg = config(tmp_path, log_texts=log_texts)
    items = TypeAdapter(texts_type(cfg.serving)).validate_python(["alpha bravo", "charlie delta echo"])
    with engine_over(cfg) as engine:
        out = asyncio.run(engine.summarize(items))
        assert asyncio.run(engine.summarize(["plain strings work too"]))[0].summary == "plain"
        assert asyncio.run(engine.summarize([])) == []
    # answered first, logged right after: the log is complete once close() has let the batcher finish
    assert [o.summary for o in out] == ["alpha", "charlie"]
    assert {(o.model_name, o.model_version, o.run_id) for o in out} == {("m", "1", "run-1")}
    assert {o.request_id for o in out} == {items[0].request_id}
    rows = InferenceLog.for_config(cfg).window(timedelta(hours=1))
    rows = rows[rows["request_id"] == items[0].request_id]
    assert sorted(rows["n_words"]) == [2, 3] and len(rows) == 2
    assert (rows["latency_ms"] >= 0).all() and set(rows["model_version"]) == {"1"}
    assert set(rows["run_id"]) == {"run-1"} and set(rows["model_name"]) == {"m"}
    if log_texts:
        assert sorted(rows["text"]) == ["alpha bravo", "charlie delta echo"]
    else:
        assert rows["text"].isna().all() and rows["summary"].isna().all()


def test_the_served_log_and_the_drift_reference_hash_a_word_identically(tmp_path, monkeypatch):
    """The server and the drift check each open the log with InferenceLog.for_config: one salt, one hash."""
    monkeypatch.delenv("STEEP_INFERENCE_SALT", raising=False)
    server_cfg = SteepConfig.model_validate({"project": {"home": str(tmp_path / "home")}})
    with engine_over(server_cfg) as engine:
        asyncio.run(engine.summarize(["alpha bravo", "charlie"]))
    logged = Sample.from_log(InferenceLog.for_config(server_cfg).window(timedelta(hours=1)))
    drift_cfg = SteepConfig.model_validate(
        {"project": {"home": str(tmp_path / "home"), "name": "other-name"}}
    )
    reference = Sample.from_texts(["alpha bravo", "charlie"], InferenceLog.for_config(drift_cfg).salt)
    assert logged.vocab == reference.vocab and all(logged.vocab)


def test_a_log_that_cannot_be_written_does_not_fail_the_answers(tmp_path):
    cfg = config(tmp_path)
    (tmp_path / "inference").write_text("a file where the log folder should be")
    with engine_over(cfg) as engine:
        assert [s.summary for s in asyncio.run(engine.summarize(["alpha bravo"]))] == ["alpha"]


# ------------------------------------------------------------------------------------ batching
def test_concurrent_callers_join_the_running_batch_and_each_gets_its_own_answers(tmp_path):
    """While a row decodes, the rows of every caller (streaming or not) join its batch at the next step and
    leave it as soon as they are finished."""
    sizes: list[int] = []
    served = Served()
    served.summarizer.steps["held while the others arrive"] = 3
    settings = {"max_new_tokens": 5, "temperature": 0.5, "top_p": 0.9, "stop": ("x",)}

    async def callers(engine: Engine):
        summarizer = served.summarizer
        summarizer.release.clear()
        first = asyncio.create_task(engine.generate(["held while the others arrive"], "r0"))
        assert await asyncio.to_thread(summarizer.started.wait, WAIT)

        async def stream() -> list:
            return [piece async for piece in engine.stream("streamed text", "r3", settings)]

        tasks = [
            asyncio.create_task(engine.generate(["alpha one", "bravo two"], "r1")),
            asyncio.create_task(engine.generate(["charlie three"], "r2", settings)),
            asyncio.create_task(stream()),
            asyncio.create_task(engine.summarize(["delta four", "echo five", "foxtrot six"])),
        ]
        await asyncio.sleep(0)  # one turn of the loop: every task submits its rows, then awaits
        summarizer.release.set()
        return await first, await asyncio.gather(*tasks)

    cfg = config(tmp_path, max_batch_size=16, prefills_per_step=16)  # the burst may join in one step
    with engine_over(cfg, served, on_batch=sizes.append) as engine:
        first, (one, two, streamed, summaries) = asyncio.run(callers(engine))
    assert sizes == [1, 8, 1]  # the 7 rows joined the running row for one step, then left it
    assert [c.text for _, c in first] == ["held"]
    assert [c.text for _, c in one] == ["alpha", "bravo"] and [c.text for _, c in two] == ["charlie"]
    assert streamed[:-1] == ["st", "reamed"] and streamed[-1][1].text == "streamed"
    assert streamed[-1][0].version == "1"
    assert [s.summary for s in summaries] == ["delta", "echo", "foxtrot"]
    default = engine.default_settings()
    assert default == {"max_new_tokens": engine.cfg.serving.max_new_tokens, "repetition_penalty": 1.0}
    assert served.summarizer.settings.count(settings) == 2  # r2 and the stream, as asked
    assert served.summarizer.settings.count(default) == 6  # the others: /summarize's settings


def test_max_batch_size_caps_the_rows_decoding_together(tmp_path):
    sizes: list[int] = []
    served = Served()
    served.summarizer.steps["held"] = 3

    async def callers(engine: Engine):
        served.summarizer.release.clear()
        first = asyncio.create_task(engine.generate(["held"], "r0"))
        assert await asyncio.to_thread(served.summarizer.started.wait, WAIT)
        rest = asyncio.create_task(engine.generate([f"t{i}" for i in range(5)], "r1"))
        await asyncio.sleep(0)
        served.summarizer.release.set()
        return await first, await rest

    with engine_over(config(tmp_path, max_batch_size=2), served, on_batch=sizes.append) as engine:
        _, rest = asyncio.run(callers(engine))
    # held alone, then beside t0, then beside t1; it leaves and t2, t3, t4 follow two at a time
    assert sizes == [1, 2, 2, 2, 1] and [c.text for _, c in rest] == [f"t{i}" for i in range(5)]


def test_a_hot_swap_mid_stream_leaves_the_running_batch_on_its_model(tmp_path):
    """The running batch finishes on the version it started with and takes no new rows; the rows that came
    meanwhile run on the new version, and a row pinned to the old one is refused there."""
    sizes: list[int] = []
    served = Served()
    summarizer = served.summarizer
    summarizer.steps["old long text"] = 3

    async def callers(engine: Engine):
        async def stream() -> list:
            return [piece async for piece in engine.stream("old long text", "r0", {})]

        summarizer.release.clear()
        streamed = asyncio.create_task(stream())
        assert await asyncio.to_thread(summarizer.started.wait, WAIT)
        served.swap_to("2")
        new = asyncio.create_task(engine.generate(["new text"], "r1"))
        pinned = asyncio.create_task(engine.generate(["pinned text"], "r2", version="1"))
        await asyncio.sleep(0)
        summarizer.release.set()
        return await streamed, await new, (await asyncio.gather(pinned, return_exceptions=True))[0]

    cfg = config(tmp_path)
    with engine_over(cfg, served, on_batch=sizes.append) as engine:
        streamed, [(new_model, new)], refused = asyncio.run(callers(engine))
    assert streamed[:-1] == ["ol", "d"]
    old_model, old = streamed[-1]
    assert (old_model.version, old.text) == ("1", "old") and (new_model.version, new.text) == ("2", "new")
    assert isinstance(refused, ModelNotFound) and "version 1 is no longer served (now 2)" in str(refused)
    assert sizes == [1, 1, 1, 1]  # the stale batch decoded the old row alone; then the new batch
    rows = InferenceLog.for_config(cfg).window(timedelta(hours=1))
    assert sorted(zip(rows["request_id"], rows["model_version"], strict=True)) == [("r0", "1"), ("r1", "2")]


def test_a_broken_step_fails_the_rows_of_its_batch_and_the_engine_goes_on(tmp_path):
    with engine_over(config(tmp_path)) as engine:
        with pytest.raises(RuntimeError, match="the model broke"):
            asyncio.run(engine.generate(["boom"], "r1"))
        assert [c.text for _, c in asyncio.run(engine.generate(["alpha bravo"], "r2"))] == ["alpha"]


# ------------------------------------------------------------------------------------ model names
def test_model_ids_and_the_version_each_pins(tmp_path):
    with engine_over(config(tmp_path)) as engine:
        assert engine.model_ids() == ["m", "m:1", "m:champion"]
        assert engine.pinned_version("m") is None and engine.pinned_version("m:champion") is None
        assert engine.pinned_version("m:1") == "1"
        for other in ("other", "m:2", "m:latest"):
            with pytest.raises(ModelNotFound, match="GET /v1/models") as err:
                engine.pinned_version(other)
            assert "'m:1'" in str(err.value)
    with engine_over(config(tmp_path, model_alias="1")) as engine:  # a pinned server: no alias to name
        assert engine.model_ids() == ["m", "m:1"]


def test_a_pinned_version_that_is_no_longer_served_fails_with_model_not_found(tmp_path):
    served = Served()
    with engine_over(config(tmp_path), served) as engine:
        assert engine.pinned_version("m:1") == "1"
        served.swap_to("2")  # the hot swap lands between the request's check and its batch
        with pytest.raises(ModelNotFound, match="version 1 is no longer served"):
            asyncio.run(engine.generate(["alpha bravo"], "r1", version="1"))

        async def stream():
            return [piece async for piece in engine.stream("alpha", "r2", {}, version="1")]

        with pytest.raises(ModelNotFound):
            asyncio.run(stream())
        [(model, done)] = asyncio.run(engine.generate(["alpha bravo"], "r3", version="2"))
        assert (model.version, done.text) == ("2", "alpha")
        with pytest.raises(ModelNotFound):
            engine.pinned_version("m:1")


class Answered:
    """Rows whose answers land in a dict, by text: (the version that answered, the result)."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[str, object]] = {}

    def row(self, text: str, version: str | None = None) -> Row:
        def done(model, result) -> None:
            self.answers[text] = (model.version, result)

        return Row(text, "r", {}, done, version=version)


def drain(batch) -> None:
    while batch.size:
        batch.step()


def test_in_one_batch_only_the_rows_pinned_to_another_version_are_refused(tmp_path):
    sizes: list[int] = []
    answered = Answered()
    served = Served()
    served.swap_to("2")
    with engine_over(config(tmp_path), served, on_batch=sizes.append) as engine:
        batch = engine.open_batch()
        for text, version in (("alpha old", "1"), ("bravo any", None), ("charlie new", "2")):
            batch.add(answered.row(text, version))
        version, refused = answered.answers["alpha old"]  # refused at once, never decoded
        assert version == "2" and isinstance(refused, ModelNotFound) and batch.size == 2
        drain(batch)
    assert sizes == [2]
    assert [(v, c.text) for v, c in (answered.answers["bravo any"], answered.answers["charlie new"])] == [
        ("2", "bravo"),
        ("2", "charlie"),
    ]
    rows = InferenceLog.for_config(engine.cfg).window(timedelta(hours=1))
    assert len(rows) == 2 and set(rows["model_version"]) == {"2"}  # the refused row is not logged


def test_an_engine_batch_keeps_its_model_and_logs_in_groups_of_16_and_when_it_empties(tmp_path):
    sizes: list[int] = []
    answered = Answered()
    served = Served()
    served.summarizer.steps["slow one"] = 3
    cfg = config(tmp_path)

    def logged():
        return InferenceLog.for_config(cfg).window(timedelta(hours=1))

    with engine_over(cfg, served, on_batch=sizes.append) as engine:
        batch = engine.open_batch()
        for text in ["slow one", *(f"quick{i}" for i in range(16))]:
            batch.add(answered.row(text))
        batch.step()  # the 16 quick rows are answered, and logged together
        assert batch.size == 1 and len(answered.answers) == 16 and len(logged()) == 16
        served.swap_to("2")
        assert batch.stale() and not engine.open_batch().stale()
        batch.step()
        assert len(logged()) == 16  # one row answered later: logged when the batch empties
        batch.step()
        assert batch.size == 0 and len(logged()) == 17
    assert sizes == [17, 1, 1]
    assert answered.answers["slow one"][0] == "1"  # the swap did not reach the running batch
    rows = logged()
    assert set(rows["model_version"]) == {"1"} and set(rows["run_id"]) == {"run-1"}
    assert (rows["latency_ms"] >= 0).all() and set(rows["request_id"]) == {"r"}


def test_a_failed_engine_batch_answers_its_rows_with_the_error_and_logs_those_answered_before(tmp_path):
    answered = Answered()
    served = Served()
    served.summarizer.steps["alpha beside it"] = 3
    with engine_over(config(tmp_path), served) as engine:
        batch = engine.open_batch()
        batch.add(answered.row("alpha beside it"))
        batch.add(answered.row("bravo answered first"))
        batch.step()
        assert batch.size == 1 and answered.answers["bravo answered first"][1].text == "bravo"
        batch.add(answered.row("boom"))
        with pytest.raises(RuntimeError) as err:
            batch.step()
        batch.fail(err.value)
        assert batch.size == 0
        assert [answered.answers[t][1] for t in ("alpha beside it", "boom")] == [err.value, err.value]
        rows = InferenceLog.for_config(engine.cfg).window(timedelta(hours=1))
        assert list(rows["n_words"]) == [3]  # the row answered before the failure, and only it
