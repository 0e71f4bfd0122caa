"""Drift metrics and the decision, on the real legal set: new documents of the same kind are not drift."""

import random

import pandas as pd
import pytest

from steep.config import DriftConfig
from steep.drift import (
    Sample,
    compare,
    drift_plot,
    js_divergence,
    measure,
    natural_levels,
    oov_share,
    psi,
    vocabulary_js,
    words,
)
from steep.drift.traffic import shifted_texts
from steep.inference_log import record

SALT = "steep"


@pytest.fixture(scope="module")
def legal(legal_jsonl) -> pd.DataFrame:
    return pd.read_json(legal_jsonl, lines=True)


@pytest.fixture(scope="module")
def split(legal):
    """Training rows from 80% of the documents; the other documents are what the server sees later."""
    docs = sorted(legal["doc"].unique())
    random.Random(0).shuffle(docs)
    cut = int(len(docs) * 0.8)
    train = legal[legal["doc"].isin(docs[:cut])]
    unseen = legal[legal["doc"].isin(docs[cut:])]
    return Sample.from_texts(train["source_text"], SALT, groups=list(train["doc"])), list(
        unseen["source_text"]
    )


def window_of(texts: list[str]) -> Sample:
    return Sample.from_texts(texts, SALT)


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift():
    rng = random.Random(0)
    ref = [rng.gauss(100, 20) for _ in range(2000)]
    same = [rng.gauss(100, 20) for _ in range(500)]
    shifted = [rng.gauss(200, 20) for _ in range(500)]
    assert psi(ref, same) < 0.05
    assert psi(ref, shifted) > 1.0


def test_oov_and_js_bounds():
    a = Sample.from_texts(["the cat sat on the mat"], SALT).counts()
    assert oov_share(a, a) == 0.0 and js_divergence(a, a) == pytest.approx(0.0)
    b = Sample.from_texts(["quantum flux capacitor"], SALT).counts()
    assert oov_share(a, b) == 1.0 and js_divergence(a, b) == pytest.approx(1.0)
    assert vocabulary_js(a, a) == pytest.approx(0.0) and vocabulary_js(a, b) == pytest.approx(1.0)


def test_counts_are_per_row_like_the_log():
    """The log keeps each distinct word of a row once, so the reference must count the same way."""
    assert sorted(Sample.from_texts(["the the the cat"], SALT).counts().values()) == [1, 1]
    assert Sample.from_texts(["the the cat", "the dog"], SALT).counts().most_common(1)[0][1] == 2


def test_log_rows_and_texts_agree_in_hash_space(legal):
    texts = list(legal["source_text"][:60])
    rows = [
        record(t, "s", model_name="m", model_version="1", run_id="r", request_id="q", latency_ms=1.0,
               log_texts=False, salt=SALT)
        for t in texts
    ]  # fmt: skip
    from_log = Sample.from_log(pd.DataFrame(rows))
    from_texts = Sample.from_texts(texts, SALT)
    assert from_log.lengths == from_texts.lengths and from_log.vocab == from_texts.vocab
    assert measure(from_texts, from_log) == {"length_psi": 0.0, "oov_share": 0.0, "word_js": 0.0}
    other_salt = Sample.from_texts(texts, "another-project")
    assert measure(from_texts, other_salt)["oov_share"] == 1.0  # the salt is part of the contract


@pytest.mark.parametrize("seed", range(5))
def test_unseen_documents_of_the_same_kind_are_ok(split, seed):
    reference, unseen = split
    window = window_of(random.Random(seed).choices(unseen, k=100))
    report = compare(DriftConfig(), reference, window, 0.0)
    assert report.status == "ok", report.reasons


def test_uncalibrated_thresholds_call_new_documents_drift(split):
    """Why calibration exists: lengths cluster by document, so fixed rule-of-thumb thresholds misfire."""
    reference, unseen = split
    raw = [
        compare(
            DriftConfig(calibrate=False), reference, window_of(random.Random(s).choices(unseen, k=100)), 0
        )
        for s in range(10)
    ]
    assert any(r.drifted for r in raw)
    natural = natural_levels(reference, 100)
    assert natural["length_psi"] > DriftConfig().psi_threshold


@pytest.mark.parametrize("shift", ["domain", "noise"])
def test_shifted_window_is_drift(split, legal, shift):
    reference, _ = split
    window = window_of(shifted_texts(list(legal["source_text"]), 80, shift=shift, seed=1))
    report = compare(DriftConfig(), reference, window, 0.0)
    assert report.drifted
    over = {r.split()[0] for r in report.reasons}
    assert {"oov_share", "length_psi"} <= over, report.reasons
    assert report.metrics["oov_share"] > report.limits["oov_share"]


def test_simulated_in_distribution_texts_are_ok(split, legal):
    reference, unseen = split
    window = window_of(shifted_texts(unseen, 80, shift="none", seed=2))
    assert compare(DriftConfig(), reference, window, 0.0).status == "ok"


def test_failing_share_alone_is_drift(split):
    reference, unseen = split
    window = window_of(unseen[:100])
    report = compare(DriftConfig(), reference, window, 0.5)
    assert report.drifted and report.reasons == ["failing_share 0.500 > 0.100"]


def test_too_small_window_says_so(split):
    reference, _ = split
    report = compare(DriftConfig(min_window_rows=50), reference, window_of(["a b c"] * 7), 0.0)
    assert report.status == "insufficient" and "only 7 rows" in report.reasons[0] and not report.metrics
    assert not report.drifted


def test_report_is_json_ready(split):
    import json

    reference, unseen = split
    report = compare(DriftConfig(), reference, window_of(unseen[:60]), 0.0)
    data = json.loads(json.dumps(report.as_dict()))
    assert set(data["limits"]) == set(data["thresholds"]) == set(data["metrics"])
    assert all(data["limits"][k] >= data["thresholds"][k] for k in data["limits"])


def test_plot(tmp_path, split):
    reference, _ = split
    window = window_of(["short text"] * 60)
    report = compare(DriftConfig(), reference, window, 0.0)
    assert drift_plot(reference, window, report, tmp_path / "d.png").stat().st_size > 5_000


def test_words_is_the_log_tokenizer():
    from steep import inference_log

    assert words is inference_log.words
