"""The inference-batch suite run with GX on log rows written by the real `inference_log.record`."""

import pandas as pd
import pytest

from steep.config import SteepConfig
from steep.expectations.inference_batch import inference_rules, run_inference_suite
from steep.inference_log import record

GOOD = "The licensee may not sublicense the software to any third party without written consent."


def rows(texts: list[str], summary: str = "no sublicensing", log_texts: bool = False) -> pd.DataFrame:
    return pd.DataFrame(
        [
            record(t, summary, model_name="m", model_version="1", run_id="r", request_id="q",
                   latency_ms=1.0, log_texts=log_texts, salt="steep")
            for t in texts
        ]
    )  # fmt: skip


@pytest.fixture
def cfg(tmp_path) -> SteepConfig:
    return SteepConfig.model_validate({"project": {"home": str(tmp_path / "home")}})


def test_clean_window_has_no_failing_rows(cfg):
    result = run_inference_suite(rows([GOOD] * 30), cfg)
    assert result.rows == 30 and result.failing_rows == 0 and result.failing_share == 0.0
    assert all(r.success for r in result.rules)


def test_bad_rows_are_counted_once_each(cfg):
    texts = [GOOD] * 16 + ["   "] * 2 + ["short"] + ["x" * 25_000]
    result = run_inference_suite(rows(texts), cfg)
    assert result.failing_rows == 4 and result.failing_share == pytest.approx(4 / 20)
    counts = result.summary()
    assert counts["text not blank"] == 2 and counts["text length in bounds"] == 4  # blanks are short too
    assert counts["text has words"] == 2


def test_empty_summaries_fail(cfg):
    result = run_inference_suite(rows([GOOD] * 10, summary="  "), cfg)
    assert result.failing_share == 1.0 and result.summary() == {"summary not empty": 10}


@pytest.mark.parametrize(("policy", "counted"), [("ignore", 0), ("warn", 0), ("fail", 3)])
def test_pii_follows_the_validation_policy(cfg, policy, counted):
    cfg.validation.pii.emails = policy
    texts = [GOOD] * 7 + [GOOD + " Write to jane.doe@example.com for consent."] * 3
    result = run_inference_suite(rows(texts), cfg)
    assert result.failing_rows == counted
    names = {r.name for r in result.rules}
    assert ("no emails" in names) is (policy != "ignore")
    if policy == "warn":
        assert result.summary() == {"no emails": 3}  # reported, not counted


def test_texts_are_not_needed(cfg):
    """Works on the statistics columns alone: the same verdict with and without logged texts."""
    texts = [GOOD] * 8 + [""] * 2
    hidden = run_inference_suite(rows(texts, log_texts=False), cfg)
    shown = run_inference_suite(rows(texts, log_texts=True), cfg)
    assert hidden.failing_rows == shown.failing_rows == 2


def test_window_without_the_columns_fails_every_row(cfg):
    result = run_inference_suite(pd.DataFrame({"n_chars": [50, 60], "n_words": [9, 10]}), cfg)
    assert result.failing_rows == 2 and "columns present" in result.summary()


def test_empty_window(cfg):
    assert run_inference_suite(rows([]), cfg).rows == 0


def test_bounds_come_from_config(cfg):
    cfg.validation.text_min_chars = 5
    cfg.serving.max_text_chars = 1_000
    rule = next(r for r in inference_rules(cfg) if r.name == "text length in bounds")
    assert (rule.expectation.min_value, rule.expectation.max_value) == (5, 1_000)
