"""Candidates, the gate by role, and the evaluation on the MLflow run under the keys it always had."""

from __future__ import annotations

from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest

from ray_jobs.evaluate import Evaluation, Role, Scores
from steep import tracking
from steep.data import split_dataset
from steep.pipeline.evaluation import candidates, decide, log_evaluation
from steep.pipeline.training import TrainResult
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
    assert found[0].cache_id is None and found[1].cache_id.startswith("base:")


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
