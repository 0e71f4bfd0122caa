"""The engine: one batch answered with the model identity, every text in the inference log."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import TypeAdapter

from steep.config import SteepConfig
from steep.drift import Sample
from steep.inference_log import InferenceLog
from steep.serving.engine import Engine
from steep.serving.model_slot import LoadedModel, ModelSlot
from steep.serving.schema import texts_type
from tests.steep.serving.test_model_slot import FakeRegistry


class EchoSummarizer:
    def summarize(self, texts, max_new_tokens=48, batch_size=8):
        return [t.split()[0] for t in texts]


def echo_engine(cfg: SteepConfig) -> Engine:
    reg = FakeRegistry()
    reg.load = lambda v: LoadedModel("m", v, f"run-{v}", EchoSummarizer())  # type: ignore[method-assign]
    slot = ModelSlot(reg.resolve, reg.load)
    slot.refresh()
    return Engine(cfg, slot)


@pytest.mark.parametrize("log_texts", [False, True])
def test_engine_answers_with_the_model_identity_and_logs_every_text(tmp_path, log_texts):
    cfg = SteepConfig.model_validate(
        {"project": {"home": str(tmp_path)}, "serving": {"log_texts": log_texts}}
    )
    engine = echo_engine(cfg)
    items = TypeAdapter(texts_type(cfg.serving)).validate_python(["alpha bravo", "charlie delta echo"])
    out = engine.summarize(items)
    assert [o.summary for o in out] == ["alpha", "charlie"]
    assert {(o.model_name, o.model_version, o.run_id) for o in out} == {("m", "1", "run-1")}
    rows = InferenceLog.for_config(cfg).window(timedelta(hours=1))
    assert list(rows["n_words"]) == [2, 3] and set(rows["request_id"]) == {items[0].request_id}
    assert (rows["latency_ms"] >= 0).all() and set(rows["model_version"]) == {"1"}
    if log_texts:
        assert list(rows["text"]) == ["alpha bravo", "charlie delta echo"]
    else:
        assert rows["text"].isna().all() and rows["summary"].isna().all()
    assert engine.summarize(["plain strings work too"])[0].summary == "plain"


def test_the_served_log_and_the_drift_reference_hash_a_word_identically(tmp_path, monkeypatch):
    """The server and the drift check each open the log with InferenceLog.for_config: one salt, one hash."""
    monkeypatch.delenv("STEEP_INFERENCE_SALT", raising=False)
    server_cfg = SteepConfig.model_validate({"project": {"home": str(tmp_path / "home")}})
    echo_engine(server_cfg).summarize(["alpha bravo", "charlie"])
    logged = Sample.from_log(InferenceLog.for_config(server_cfg).window(timedelta(hours=1)))
    drift_cfg = SteepConfig.model_validate(
        {"project": {"home": str(tmp_path / "home"), "name": "other-name"}}
    )
    reference = Sample.from_texts(["alpha bravo", "charlie"], InferenceLog.for_config(drift_cfg).salt)
    assert logged.vocab == reference.vocab and all(logged.vocab)
