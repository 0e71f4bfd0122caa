"""How trials ended (steep.pipeline.tune.outcomes): the best of them, the error when none finished, one line
per trial, and an outcome read from a trial's last result."""

from __future__ import annotations

from steep.config import SteepConfig
from steep.pipeline.tune import best_trial, plan_space, progress_line, short_keys
from steep.pipeline.tune.outcomes import nothing_finished, trial_outcome
from tests.steep.pipeline.tune.conftest import outcome, with_space


def test_the_best_trial_is_the_highest_validation_score_of_those_that_finished():
    outcomes = [
        outcome(1, score=0.20, loss=2.0, is_defaults=True),
        outcome(2, "stopped", loss=1.0, reason="stopped early at epoch 1"),
        outcome(3, score=0.25, loss=2.5),
        outcome(4, score=0.25, loss=2.1),  # the same score, a lower validation loss
        outcome(5, "failed", reason="TrainingError: no"),
    ]
    assert best_trial(outcomes).index == 4
    assert best_trial([o for o in outcomes if o.status != "finished"]) is None


def test_nothing_finished_is_an_error_that_lists_why():
    cfg = SteepConfig()
    ended = [
        outcome(1, "failed", reason="TrainingError: batch"),
        outcome(2, "stopped", reason="stopped by the time budget"),
    ]
    text = nothing_finished(ended, cfg)
    assert "none of the 2 trials finished" in text and "no overlay was written" in text
    assert (
        "trial 1: failed: TrainingError: batch" in text
        and "trial 2: stopped: stopped by the time budget" in text
    )
    assert "no trial ran within tune.time_budget=30m" in nothing_finished([], cfg)


def test_one_line_per_trial():
    names = short_keys(["training.learning_rate", "training.lora.r", "serving.max_new_tokens"])
    assert names == {"training.learning_rate": "learning_rate", "training.lora.r": "lora.r",
                     "serving.max_new_tokens": "max_new_tokens"}  # fmt: skip
    settings = {"training.learning_rate": 0.0006132, "training.lora.r": 16, "serving.max_new_tokens": 48}
    done = outcome(2, score=0.2431, loss=2.3151, seconds=95.2, settings=settings)
    assert progress_line(done, 8, names, "rougeL") == (
        "trial 2/8 finished in 95 s: learning_rate=0.0006132 lora.r=16 max_new_tokens=48 | val loss 2.315 "
        "| val ROUGE-L 24.31"
    )
    stopped = outcome(3, "stopped", loss=2.9, seconds=40, reason="stopped early at epoch 1 (ASHA: ...)")
    assert progress_line(stopped, 8, names, "rougeL").startswith("trial 3/8 stopped early at epoch 1")
    failed = outcome(4, "failed", seconds=3, reason="TrainingError: too big")
    assert progress_line(failed, 8, names, "rougeL").endswith("| TrainingError: too big")
    assert short_keys(["training.precision", "serving.precision"]) == {
        "training.precision": "training.precision", "serving.precision": "serving.precision"}  # fmt: skip


def test_a_trials_outcome_says_how_it_ended():
    plan = plan_space(with_space({"training.learning_rate": {"loguniform": [1e-4, 1e-3]}}))
    config = {"training.learning_rate": 0.000123456}
    scored = {"epoch": 2, "step": 10, "val_loss": 2.5, "val_score": 0.21, "val_rougeL": 0.21, "run_id": "r1"}

    def ended(trial_id, last, **kw):
        options = {"error": None, "stopped": {"abcde_00001": 1}, "budget_hit": False, "show_node": False}
        return trial_outcome(trial_id, config, last, 0.0, plan=plan, defaults=True, **{**options, **kw})

    done = ended("abcde_00000", scored)
    assert (done.status, done.val_score, done.run_id, done.is_defaults) == ("finished", 0.21, "r1", True)
    assert done.settings == {"training.learning_rate": 0.0001235} and done.val_loss == 2.5
    early = ended("abcde_00001", {"epoch": 1, "step": 5, "val_loss": 3.0})
    assert early.status == "stopped" and early.reason.startswith("stopped early at epoch 1 (ASHA")
    late = ended("abcde_00002", {"epoch": 1, "step": 5, "val_loss": 3.0}, budget_hit=True)
    assert (late.status, late.reason) == ("stopped", "stopped by the time budget")
    broken = ended("abcde_00003", {}, error=ValueError("bad value"))
    assert (broken.status, broken.reason, broken.is_defaults) == ("failed", "ValueError: bad value", False)
