"""steep.scoring: ROUGE per row and on average, Lead-1, the cache of unchanged models, intervals, plots."""

import json

import pandas as pd
import pytest

from steep.scoring.candidates import Candidate, evaluate, evaluate_candidates, in_process, predictions_table
from steep.scoring.plots import comparison_plot, intervals_plot
from steep.scoring.scores import Evaluation, Role, Scores, compare, lead1, row_scores, score

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
    def summarize(self, texts, max_new_tokens, batch_size, repetition_penalty=1.0):
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
    generate = in_process({"max_new_tokens": 4}, batch_size=2)
    kwargs = dict(generate=generate, max_new_tokens=4, cache_dir=tmp_path, settings={"n": 2})
    first = evaluate_candidates(cands, TEST, "digest", log=lambda _: None, **kwargs)
    assert [e.name for e in first] == ["lead-1", "challenger", "base"] and len(loads) == 2
    assert [e.role for e in first] == [Role.BASELINE, Role.CHALLENGER, Role.BASE]
    second = evaluate_candidates(cands, TEST, "digest", log=lambda _: None, **kwargs)
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


# ---------------------------------------------------------------------------------------- per row, intervals
def test_row_scores_average_to_the_scores():
    preds, refs = ["the cat sat", "dog", "a b c d"], ["the cat sat", "the cat sat", "a b"]
    rows = row_scores(preds, refs)
    assert rows["rouge1"] == pytest.approx([1.0, 0.0, 2 / 3]) and rows["length_ratio"] == [1.0, 1 / 3, 2.0]
    s = score(preds, refs)
    assert s.rougeL == pytest.approx(sum(rows["rougeL"]) / 3) and s.n == 3


def test_evaluations_keep_per_row_scores_and_an_old_cache_still_serves(tmp_path):
    """The cache holds predictions; the rows (and the means) are scored from them again on loading, so a
    cache written before per-row scores (or with stale scores) gives the same evaluation as generating."""
    fresh = evaluate("m", lambda texts: [t.split(".")[0] for t in texts], TEST, role=Role.BASE)
    assert fresh.rows["rougeL"] == pytest.approx(
        row_scores(fresh.predictions, list(TEST["summary"]))["rougeL"]
    )
    (tmp_path / "old.json").write_text(
        json.dumps({"scores": {**fresh.scores.as_dict(), "rougeL": 0.99}, "predictions": fresh.predictions})
    )
    cached = evaluate("m", pytest.fail, TEST, role=Role.BASE, cache_dir=tmp_path, key="old")
    assert cached.cached and cached.rows == fresh.rows and cached.scores == fresh.scores
    (tmp_path / "short.json").write_text(
        json.dumps({"predictions": ["only one"]})
    )  # not these rows: regenerate
    again = evaluate(
        "m", lambda texts: ["x"] * len(texts), TEST, role=Role.BASE, cache_dir=tmp_path, key="short"
    )
    assert not again.cached and again.predictions == ["x", "x"]


def scored(name: str, role: Role, rows: dict[str, list[float]]) -> Evaluation:
    n = len(rows["rougeL"])
    means = {m: sum(v) / n for m, v in rows.items()}
    return Evaluation(name, role, Scores(**means, length_ratio=1.0, n=n), ["p"] * n, rows=rows)


def test_compare_gives_the_challenger_an_interval_against_every_other_model(tmp_path):
    good = {m: [0.3, 0.4, 0.5, 0.6, 0.3, 0.4] for m in ("rouge1", "rouge2", "rougeL")}
    same = {m: list(v) for m, v in good.items()}
    worse = {m: [x - 0.1 for x in v] for m, v in good.items()}
    evaluations = [
        scored("lead-1", Role.BASELINE, worse),
        scored("challenger", Role.CHALLENGER, good),
        scored("base", Role.BASE, same),
        scored("champion v3", Role.CHAMPION, worse),
    ]
    groups = ["d1", "d1", "d2", "d2", "d3", "d3"]
    out = compare(evaluations, groups, confidence=0.9, resamples=500, seed=1)
    assert [e.name for e in out] == [e.name for e in evaluations]
    versus = out[1].versus
    assert set(versus) == {"lead-1", "base", "champion"} and set(versus["base"]) == {
        "rouge1",
        "rouge2",
        "rougeL",
    }
    assert all(not e.versus for e in out if e.role is not Role.CHALLENGER)
    tie = versus["base"]["rougeL"]
    assert (tie.delta, tie.low, tie.high) == (0.0, 0.0, 0.0) and tie.units == 3 and tie.confidence == 0.9
    ahead = versus["lead-1"]["rougeL"]
    assert ahead.low == pytest.approx(0.1) and ahead.high == pytest.approx(0.1)
    assert compare(evaluations, groups, confidence=0.9, resamples=500, seed=1) == out  # seeded
    plot = intervals_plot(out, tmp_path / "intervals.png")
    assert plot is not None and plot.stat().st_size > 5_000
    assert intervals_plot(evaluations, tmp_path / "none.png") is None  # no intervals, no picture


def test_compare_leaves_evaluations_without_rows_alone():
    s = Scores(0.1, 0.1, 0.1, 1.0, 1)
    plain = [Evaluation("challenger", Role.CHALLENGER, s, ["a"]), Evaluation("base", Role.BASE, s, ["b"])]
    assert compare(plain, None, confidence=0.95, resamples=100, seed=0) == plain
