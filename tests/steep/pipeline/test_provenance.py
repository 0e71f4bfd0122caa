"""The tags that trace a model back to its data: on the training run and on the model version."""

from __future__ import annotations

import subprocess

import mlflow

from steep import tracking
from steep.data import Dataset, split_dataset
from steep.pipeline.prepare import PreparedData
from steep.pipeline.provenance import git_commit, run_tags, tag_run, version_tags
from steep.registry import GateDecision
from steep.scoring.scores import Evaluation, Role, Scores
from steep.validation import ValidationReport
from tests.conftest_train import toy_frame
from tests.steep.pipeline.conftest import toy_config

REPORT = ValidationReport(passed=True, policy="drop", rows_in=40, rows_out=40, results=[])


def test_git_commit_of_a_checkout_and_of_a_plain_folder(tmp_path):
    assert git_commit(tmp_path) == "unknown"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", str(tmp_path)], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert git_commit(tmp_path) == head.stdout.strip() and len(head.stdout.strip()) == 40


def test_version_tags(tmp_path):
    cfg = toy_config(tmp_path)
    frame = toy_frame(40)
    splits = split_dataset(frame, cfg.data.split, cfg.project.seed)
    prepared = PreparedData(Dataset(frame, "d1g35t", "toy.jsonl", tmp_path / "toy.jsonl"), REPORT, splits)
    scores = Scores(0.3, 0.1, 0.25, 1.0, 4)
    evaluations = [
        Evaluation("lead-1", Role.BASELINE, scores, []),
        Evaluation("challenger", Role.CHALLENGER, scores, []),
        Evaluation("base", Role.BASE, scores, []),
        Evaluation("champion v3", Role.CHAMPION, scores, []),
    ]
    decision = GateDecision(True, "rougeL", 0.25, 0.2, "champion v3", ["gain"])
    tags = version_tags(cfg, prepared, evaluations, decision)
    assert tags["steep.data_digest"] == "d1g35t"
    assert {f"steep.split_digest.{name}": tags[f"steep.split_digest.{name}"] for name in splits.digests} == {
        f"steep.split_digest.{name}": digest for name, digest in splits.digests.items()
    }
    assert tags["steep.validation"] == REPORT.summary() and tags["steep.gate"] == decision.summary()
    assert tags["steep.gate_passed"] is True and tags["steep.git_commit"]
    assert {k for k in tags if k.startswith("steep.eval.")} == {
        "steep.eval.lead-1", "steep.eval.challenger", "steep.eval.base", "steep.eval.champion"
    }  # fmt: skip
    assert tags["steep.eval.champion"] == scores.as_dict()


def test_run_tags_name_the_reason_and_the_trigger(tmp_path, embedded_mlflow):
    cfg = toy_config(tmp_path)
    tags = run_tags(cfg, "drift", {"drift_run_id": "abc", "window_rows": 80}, REPORT, flow_run_id="f-1")
    assert tags["steep.reason"] == "drift" and tags["prefect.flow_run_id"] == "f-1"
    assert tags["steep.trigger.drift_run_id"] == "abc" and tags["steep.trigger.window_rows"] == "80"
    assert tags["steep.validation"] == str(REPORT.summary())
    assert not any(k.startswith("steep.trigger.") for k in run_tags(cfg, "manual", None, REPORT, None))
    experiment = tracking.setup(cfg)
    run_id = mlflow.MlflowClient().create_run(experiment).info.run_id
    tag_run(run_id, tags)
    assert tags.items() <= mlflow.MlflowClient().get_run(run_id).data.tags.items()
