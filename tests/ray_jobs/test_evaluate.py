import pandas as pd
import pytest

from ray_jobs.evaluate import (
    Candidate,
    Evaluation,
    Role,
    Scores,
    comparison_plot,
    evaluate,
    evaluate_candidates,
    lead1,
    predictions_table,
    score,
)

TEST = pd.DataFrame(
    {
        "id": ["a", "b"],
        "text": ["you may cancel any time. fees are not refunded.", "we sell your data! to partners."],
        "summary": ["you can cancel any time", "they sell your data"],
    }
)


def test_score_perfect_and_disjoint():
    perfect = score(["the cat sat"], ["the cat sat"])
    assert perfect.rouge1 == perfect.rouge2 == perfect.rougeL == pytest.approx(1.0)
    assert score(["dog"], ["the cat sat"]).rouge1 == 0.0


def test_score_uses_stemming_and_length_ratio():
    s = score(["cancelling accounts"], ["cancel account"])
    assert s.rouge1 == pytest.approx(1.0)  # Porter stems match
    assert score(["a b c d"], ["a b"]).length_ratio == pytest.approx(2.0)


def test_score_needs_matching_lengths():
    with pytest.raises(ValueError, match="as many predictions"):
        score(["a"], [])


def test_lead1_takes_the_first_sentence():
    assert lead1("you may cancel any time. fees are not refunded.") == "you may cancel any time."
    assert lead1("no sentence end here") == "no sentence end here"


def test_evaluate_caches_by_key(tmp_path):
    calls = []

    def summarize(texts):
        calls.append(len(texts))
        return [t.split(".")[0] for t in texts]

    first = evaluate("m", summarize, TEST, role=Role.BASE, cache_dir=tmp_path, key="k1")
    again = evaluate("m", summarize, TEST, role=Role.BASE, cache_dir=tmp_path, key="k1")
    assert calls == [2] and again.cached and again.scores == first.scores
    assert again.role is Role.BASE  # the role is the caller's, not the cache's
    evaluate("m", summarize, TEST, role=Role.BASE, cache_dir=tmp_path, key="k2")
    assert calls == [2, 2]


class Echo:
    def summarize(self, texts, max_new_tokens, batch_size):
        return [" ".join(t.split()[:max_new_tokens]) for t in texts]


def test_candidates_load_lazily_and_cache_only_stable_models(tmp_path):
    loads = []

    def load():
        loads.append(1)
        return Echo()

    cands = [
        Candidate("challenger", Role.CHALLENGER, load),
        Candidate("base", Role.BASE, load, cache_id="base:x"),
    ]
    kwargs = dict(max_new_tokens=4, batch_size=2, cache_dir=tmp_path, settings={"n": 2}, log=lambda _: None)
    first = evaluate_candidates(cands, TEST, "digest", **kwargs)
    assert [e.name for e in first] == ["lead-1", "challenger", "base"] and len(loads) == 2
    assert [e.role for e in first] == [Role.BASELINE, Role.CHALLENGER, Role.BASE]
    second = evaluate_candidates(cands, TEST, "digest", **kwargs)
    assert len(loads) == 3 and [e.cached for e in second] == [False, False, True]
    table = predictions_table(TEST, second)
    assert list(table.columns) == ["id", "text", "reference", "lead-1", "challenger", "base"]
    assert comparison_plot(second, tmp_path / "plot.png").stat().st_size > 5_000


def test_the_key_in_mlflow_names_is_the_role_or_which_baseline():
    """Metric and tag keys stay as they were: eval_champion_* for "champion v3", eval_lead1_* for lead-1."""
    s = Scores(0.1, 0.1, 0.1, 1.0, 1)
    assert Evaluation("champion v3", Role.CHAMPION, s, []).key == "champion"
    assert Evaluation("challenger", Role.CHALLENGER, s, []).key == "challenger"
    assert Evaluation("base", Role.BASE, s, []).key == "base"
    assert Evaluation("lead-1", Role.BASELINE, s, []).key == "lead-1"
