"""A tune trial's scoring: its model generates on the validation rows with the decoding settings evaluation
uses, and records what it was given."""

from __future__ import annotations

import pytest

from steep.config import SteepConfig
from steep.pipeline.evaluation import decoding
from steep.ray_jobs.tune_trial import load_trained, score_validation, texts_digest
from tests.conftest_train import tiny_config, toy_splits


class Recording:
    """A summarizer that answers with each text's first three words and keeps what it was asked."""

    def __init__(self):
        self.calls = []

    def summarize(self, texts, **settings):
        self.calls.append((list(texts), settings))
        return [" ".join(t.split()[:3]) for t in texts]


def test_the_trial_generates_on_the_validation_rows_with_the_servers_decoding_settings():
    cfg = SteepConfig.model_validate(
        {"serving": {"max_new_tokens": 32, "repetition_penalty": 1.2}, "evaluation": {"batch_size": 4}}
    )
    validation = toy_splits(cfg).validation
    summarizer = Recording()
    evaluation, given = score_validation(cfg, summarizer, validation, decoding(cfg))
    ((texts, settings),) = summarizer.calls
    assert texts == list(validation["text"])
    assert settings == {"batch_size": 4, "max_new_tokens": 32, "repetition_penalty": 1.2}
    assert given == texts_digest(list(validation["text"]))
    assert evaluation.scores.rougeL == pytest.approx(1.0)  # the toy summary is the first three words
    assert evaluation.predictions == [" ".join(t.split()[:3]) for t in validation["text"]]


def test_a_trained_adapter_loads_as_the_server_loads_it(causal_dir, tmp_path):
    from steep.pipeline.training import train

    cfg = tiny_config(tmp_path / "home", causal_dir, epochs=1)
    result = train(cfg, toy_splits(cfg), log_model=False)
    assert result.model_uri is None  # a tune trial logs no model
    summarizer = load_trained(cfg, result.base_model_dir, result.model_dir)
    out = summarizer.summarize(["alpha bravo charlie delta"], max_new_tokens=3)
    assert len(out) == 1 and len(out[0].split()) <= 3
    assert summarizer.precision in ("fp32", "bf16")
