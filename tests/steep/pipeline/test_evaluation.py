"""Candidates, the gate by role, and the evaluation on the MLflow run under the keys it always had."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest

from steep import tracking
from steep.data import split_dataset
from steep.pipeline.evaluation import candidates, decide, log_evaluation, with_intervals
from steep.pipeline.training import TrainResult
from steep.registry import interval_text
from steep.scoring.scores import Evaluation, Role, Scores
from tests.conftest_train import toy_frame
from tests.steep.pipeline.conftest import toy_config


def ev(name: str, role: Role, rouge_l: float, n: int = 2) -> Evaluation:
    return Evaluation(name, role, Scores(0.3, 0.1, rouge_l, 1.0, n), ["a b"] * n)


def result(tmp_path) -> TrainResult:
    return TrainResult("run", "name", "models:/m-1", "ckpt", "out", str(tmp_path / "base"))


class FakeRegistry:
    name = "pipe-test-summarizer"

    def __init__(self, champion: str | None):
        self.champion = champion

    def alias(self, alias: str):
        return SimpleNamespace(version=self.champion) if self.champion and alias == "champion" else None


def test_candidates_without_a_champion(tmp_path):
    found = candidates(toy_config(tmp_path), result(tmp_path), FakeRegistry(None))
    assert [(c.name, c.role) for c in found] == [("challenger", Role.CHALLENGER), ("base", Role.BASE)]
    assert found[1].cache_id.startswith("base:")
    # a logged model never changes: its predictions serve a resumed run's evaluation
    assert found[0].cache_id.startswith("models:/m-1:")
    unlogged = candidates(toy_config(tmp_path), replace(result(tmp_path), model_uri=None), FakeRegistry(None))
    assert unlogged[0].cache_id is None  # nothing names it for good


def test_candidates_with_a_champion_name_it_and_cache_it(tmp_path):
    found = candidates(toy_config(tmp_path), result(tmp_path), FakeRegistry("3"))
    champion = found[-1]
    assert champion.name == "champion v3" and champion.role is Role.CHAMPION
    assert champion.cache_id.startswith("models:/pipe-test-summarizer/3:")


def test_the_gate_reads_roles_not_names(tmp_path):
    cfg = toy_config(tmp_path)
    evaluations = [
        ev("lead-1", Role.BASELINE, 0.9),
        ev("my fine-tune", Role.CHALLENGER, 0.30),
        ev("the model we started from", Role.BASE, 0.20),
    ]
    decision = decide(cfg, evaluations)
    assert decision.promote and decision.reference_name == "base model"
    assert decision.challenger == pytest.approx(0.30) and decision.reference == pytest.approx(0.20)
    with_champion = decide(cfg, [*evaluations, ev("champion v3", Role.CHAMPION, 0.35)])
    assert not with_champion.promote and with_champion.reference_name == "champion v3"


def test_log_evaluation_keeps_the_metric_keys(tmp_path, embedded_mlflow):
    cfg = toy_config(tmp_path)
    experiment = tracking.setup(cfg)
    run_id = mlflow.MlflowClient().create_run(experiment).info.run_id
    splits = split_dataset(toy_frame(40), cfg.data.split, cfg.project.seed)
    n = len(splits.test)
    evaluations = [
        ev("lead-1", Role.BASELINE, 0.1, n),
        ev("challenger", Role.CHALLENGER, 0.2, n),
        ev("base", Role.BASE, 0.3, n),
        ev("champion v3", Role.CHAMPION, 0.4, n),
    ]
    log_evaluation(cfg, run_id, splits, evaluations)
    client = mlflow.MlflowClient()
    metrics = client.get_run(run_id).data.metrics
    for prefix, value in (("lead1", 0.1), ("challenger", 0.2), ("base", 0.3), ("champion", 0.4)):
        assert metrics[f"eval_{prefix}_rougeL"] == pytest.approx(value)
        assert {f"eval_{prefix}_{k}" for k in ("rouge1", "rouge2", "length_ratio", "n")} <= set(metrics)
    artifacts = {a.path for a in client.list_artifacts(run_id, "eval")}
    assert artifacts == {"eval/predictions.json", f"eval/{run_id}-eval.png"}
    table = pd.read_json(
        client.download_artifacts(run_id, "eval/predictions.json", str(tmp_path)), orient="split"
    )
    assert list(table.columns) == ["id", "text", "reference", "lead-1", "challenger", "base", "champion v3"]


# ------------------------------------------------------------------------------------------ intervals
def with_rows(name: str, role: Role, rouge_l: list[float]) -> Evaluation:
    """An evaluation with per-row scores: ROUGE-1 and -2 a fixed step from ROUGE-L."""
    rows = {"rouge1": [x + 0.1 for x in rouge_l], "rouge2": [x - 0.1 for x in rouge_l], "rougeL": rouge_l}
    n = len(rouge_l)
    means = {m: sum(v) / n for m, v in rows.items()}
    return Evaluation(name, role, Scores(**means, length_ratio=1.0, n=n), ["a b"] * n, rows=rows)


def scored_split(cfg, splits, gains: dict[str, float]) -> list[Evaluation]:
    """lead-1, challenger and base over the test rows; on every row the challenger is ahead of each by half
    to one and a half times the given gain: sure of the direction, not of the size."""
    n = len(splits.test)
    challenger = [0.3 + 0.01 * (i % 3) for i in range(n)]

    def other(gain: float) -> list[float]:
        return [x - gain * (0.5 + (i % 3) * 0.5) for i, x in enumerate(challenger)]

    evaluations = [
        with_rows("lead-1", Role.BASELINE, other(gains["lead-1"])),
        with_rows("challenger", Role.CHALLENGER, challenger),
        with_rows("base", Role.BASE, other(gains["base"])),
    ]
    return with_intervals(cfg, splits.test, evaluations)


def test_intervals_resample_the_test_documents_seeded(tmp_path):
    cfg = toy_config(tmp_path)
    splits = split_dataset(toy_frame(60), cfg.data.split, cfg.project.seed)
    evaluations = scored_split(cfg, splits, {"lead-1": 0.05, "base": 0.1})
    versus = evaluations[1].versus
    iv = versus["base"]["rougeL"]
    assert iv.units == splits.test["group"].nunique() < len(splits.test) == iv.n
    assert iv.confidence == 0.95 and iv.low < iv.delta < iv.high
    assert scored_split(cfg, splits, {"lead-1": 0.05, "base": 0.1})[1].versus == versus  # project.seed
    other_seed = toy_config(tmp_path, project={"seed": 7})
    assert scored_split(other_seed, splits, {"lead-1": 0.05, "base": 0.1})[1].versus != versus
    surer = toy_config(tmp_path, evaluation={"confidence": 0.8})
    assert (
        scored_split(surer, splits, {"lead-1": 0.05, "base": 0.1})[1].versus["base"]["rougeL"].confidence
        == 0.8
    )


def test_the_gate_with_confidence_reads_the_challengers_intervals(tmp_path):
    plain = toy_config(tmp_path)
    splits = split_dataset(toy_frame(60), plain.data.split, plain.project.seed)
    evaluations = scored_split(plain, splits, {"lead-1": -0.02, "base": 0.1})
    assert decide(plain, evaluations).promote  # lead-1 is ahead, but nobody asked to beat it
    strict = toy_config(tmp_path, evaluation={"confidence": 0.95, "must_beat": ["lead-1"]})
    evaluations = scored_split(strict, splits, {"lead-1": -0.02, "base": 0.1})
    decision = decide(strict, evaluations)
    assert not decision.promote and decision.reference_name == "base model"
    base, lead1 = (evaluations[1].versus[k]["rougeL"] for k in ("base", "lead-1"))
    assert base.low > 0 > lead1.high  # sure ahead of the base model, sure behind lead-1
    summary = decision.summary()
    assert f"{interval_text('rougeL', base)} over the base model;" in summary
    assert f"{interval_text('rougeL', lead1)} over lead-1: at 95% the lower end does not clear" in summary


def test_log_evaluation_logs_the_intervals_and_their_plot(tmp_path, embedded_mlflow):
    cfg = toy_config(tmp_path)
    experiment = tracking.setup(cfg)
    run_id = mlflow.MlflowClient().create_run(experiment).info.run_id
    splits = split_dataset(toy_frame(40), cfg.data.split, cfg.project.seed)
    evaluations = scored_split(cfg, splits, {"lead-1": 0.05, "base": 0.1})
    log_evaluation(cfg, run_id, splits, evaluations)
    client = mlflow.MlflowClient()
    metrics = client.get_run(run_id).data.metrics
    for other in ("lead-1", "base"):
        for metric, iv in evaluations[1].versus[other].items():
            name = f"delta_{other.replace('-', '')}_{metric}"
            assert metrics[name] == pytest.approx(iv.delta)
            assert (metrics[f"{name}_low"], metrics[f"{name}_high"]) == pytest.approx((iv.low, iv.high))
    assert metrics["delta_confidence"] == 0.95
    assert metrics["delta_resampled_units"] == splits.test["group"].nunique()
    artifacts = {a.path for a in client.list_artifacts(run_id, "eval")}
    assert f"eval/{run_id}-intervals.png" in artifacts
