"""`steep tune` in pieces, without Ray: the space and its checks, the overlay and its `--set` twin, the choice
of the best trial, what a trial is shipped (never the test split), and the search's ending when nothing
finishes. The real search on Ray Tune is tests/steep/pipeline/test_tune_ray.py."""

from __future__ import annotations

import dataclasses
import math
import pickle

import mlflow
import pandas as pd
import pytest

from steep.config import ConfigError, SteepConfig, load_config
from steep.data import split_dataset
from steep.pipeline import tune as tuning
from steep.pipeline.tune import (
    OVERLAY_MARK,
    SpacePlan,
    TrialOutcome,
    TuneError,
    best_trial,
    check_output,
    overlay_yaml,
    plan_space,
    progress_line,
    set_lines,
    settle,
    short_error,
    short_keys,
    trial_config,
    trial_context,
    trials_plot,
)
from tests.conftest_train import toy_frame
from tests.steep.pipeline.conftest import toy_config


def with_space(space: dict, **sections) -> SteepConfig:
    return SteepConfig.model_validate({"tune": {"space": space}, **sections})


# --------------------------------------------------------------------------------------------- the space
def test_the_default_space_is_valid_and_every_value_passes_the_config():
    cfg = SteepConfig()
    plan = plan_space(cfg)
    assert {"training.learning_rate", "training.epochs", "training.lora.r", "serving.max_new_tokens"} <= set(
        plan.keys
    )
    assert plan.defaults["training.learning_rate"] == cfg.training.learning_rate
    assert plan.defaults["serving.max_new_tokens"] == cfg.serving.max_new_tokens
    assert plan.max_epochs(cfg.training.epochs) == 3


@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        ({"training.learning_rat": {"loguniform": [1e-4, 1e-3]}}, "did you mean 'training.learning_rate'"),
        ({"serving.max_new_token": {"choice": [32]}}, "did you mean 'serving.max_new_tokens'"),
        ({"training.workers": {"choice": [0, 1]}}, "training.workers cannot be tuned: each trial trains"),
        ({"training.lora": {"choice": [8]}}, "training.lora is a section: name one of its keys"),
        ({"project.seed": {"choice": [1, 2]}}, "project.seed cannot be tuned"),
        ({"training.epochs": {"choice": [1], "randint": [1, 3]}}, "exactly one of choice, uniform"),
        ({"training.learning_rate": {"uniform": [1e-3, 1e-4]}}, "low must be below high"),
        ({"training.learning_rate": {"loguniform": [0, 1e-3]}}, "both ends must be > 0"),
        ({"training.epochs": {"choice": []}}, "tune.space.training.epochs.choice"),
        ({"training.epochs": [1, 2]}, "tune.space.training.epochs"),
    ],
)
def test_a_bad_space_is_refused_when_the_config_is_read(tmp_path, space, fragment):
    path = tmp_path / "steep.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"tune": {"space": space}}))
    with pytest.raises(ConfigError, match="invalid config") as err:
        load_config(path, environ={})
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("space", "base", "fragments"),
    [
        ({"training.lora.r": {"choice": [8, 0]}}, {}, ["training.lora.r: choice [8, 0] can give 0", ">= 1"]),
        (
            {"training.epochs": {"uniform": [1, 3]}},
            {},
            ["training.epochs: uniform", "takes whole numbers: use choice or randint"],
        ),
        (
            {"serving.max_new_tokens": {"randint": [0, 64]}},
            {},
            ["serving.max_new_tokens: randint [0, 64] can give 0"],
        ),
        (  # a value refused by a rule across keys: packing with the base config's prompt tuning
            {"training.packing": {"choice": [False, True]}},
            {"training": {"method": "prompt_tuning"}},
            ["training.packing: choice [False, True] can give True", "packing cannot be combined"],
        ),
    ],
)
def test_a_value_the_config_refuses_is_found_before_any_trial(space, base, fragments):
    cfg = with_space(space, **base)  # the shape is fine: the config loads
    with pytest.raises(TuneError, match="values the config would refuse") as err:
        plan_space(cfg)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_ray_tune_samples_the_space_as_the_config_says():
    plan = plan_space(
        with_space({
            "training.lora.r": {"randint": [8, 9]},
            "training.learning_rate": {"loguniform": [1e-4, 1e-3]},
            "training.lora.target_modules": {"choice": ["all-linear", ["q_proj", "v_proj"]]},
        })
    )  # fmt: skip
    domains = plan.domains()
    ranks = {domains["training.lora.r"].sample() for _ in range(200)}
    assert ranks == {8, 9}  # randint's high end is included, as the config's docs say
    rates = [domains["training.learning_rate"].sample() for _ in range(200)]
    assert all(1e-4 <= r <= 1e-3 for r in rates)
    assert sum(r < 10**-3.5 for r in rates) > 60  # log scale: half the draws below the geometric middle
    targets = [domains["training.lora.target_modules"].sample() for _ in range(50)]
    assert ["q_proj", "v_proj"] in targets and "all-linear" in targets


def test_sampled_numbers_are_settled_to_four_digits():
    assert settle(0.000613245789) == 0.0006132
    assert settle(1.23456) == 1.235
    assert settle(16) == 16 and settle("all-linear") == "all-linear" and settle(None) is None


# --------------------------------------------------------------------------------------------- a trial
def test_a_trial_is_never_shipped_the_test_split(tmp_path):
    frame = toy_frame(64)
    cfg = SteepConfig.model_validate({"data": {"split": {"train": 0.6, "validation": 0.2, "test": 0.2}}})
    splits = split_dataset(frame, cfg.data.split, cfg.project.seed)
    splits.test["text"] = splits.test["text"] + " SENTINEL-TEST-ROW"
    context = trial_context(cfg, splits, tracking_uri=None, parent_run_id="p", parent_name="n", threads=1)
    shipped = pickle.dumps(context)
    assert b"SENTINEL-TEST-ROW" not in shipped
    assert not set(splits.test["id"]) & (set(context.train["id"]) | set(context.validation["id"]))
    assert set(context.digests) == {"train", "validation"}
    assert len(context.validation) == len(splits.validation) > 0


def test_a_trial_config_has_the_trials_values_and_trains_in_process(tmp_path):
    cfg = toy_config(tmp_path)
    splits = split_dataset(toy_frame(60), cfg.data.split, cfg.project.seed)
    context = trial_context(cfg, splits, tracking_uri=None, parent_run_id="p", parent_name="n", threads=1)
    trial = trial_config(context, {"training.learning_rate": 0.0007, "training.lora.r": 8})
    assert trial.training.learning_rate == 0.0007 and trial.training.lora.r == 8
    assert trial.training.workers == 0 and trial.training.validation_loss
    assert trial.data.source == cfg.data.source and trial.root == cfg.root


# --------------------------------------------------------------------------------------------- outcomes
def outcome(index, status="finished", score=None, loss=None, **kw) -> TrialOutcome:
    losses = [{"epoch": 1.0, "step": 5.0, "val_loss": loss}] if loss is not None else []
    return TrialOutcome(index, f"abcde_{index - 1:05d}", kw.pop("settings", {"training.learning_rate": 1e-3}),
                        status, val_score=score, val_losses=losses, **kw)  # fmt: skip


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
    text = tuning._nothing_finished(ended, cfg)
    assert "none of the 2 trials finished" in text and "no overlay was written" in text
    assert (
        "trial 1: failed: TrainingError: batch" in text
        and "trial 2: stopped: stopped by the time budget" in text
    )
    assert "no trial ran within tune.time_budget=30m" in tuning._nothing_finished([], cfg)


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


def test_short_error_finds_the_users_error_inside_rays_wrapper():
    class Wrapper(Exception):
        def __init__(self, cause):
            super().__init__("ray::ImplicitFunc.train() ... long traceback")
            self.cause = cause

    class TrainingError(Exception):
        pass

    inner = TrainingError("the train split has 38 row(s)\nmore text")
    assert short_error(Wrapper(inner)) == "TrainingError: the train split has 38 row(s)"
    assert short_error("steep.pipeline.training.TrainingError: too big") == "TrainingError: too big"


def test_the_trials_plot_is_written(tmp_path):
    outcomes = [
        outcome(1, score=0.2, loss=2.0, is_defaults=True),
        outcome(2, "stopped", loss=3.0),
        outcome(3, "failed"),
    ]
    path = trials_plot(outcomes, "rougeL", tmp_path / "plot.png", best=outcomes[0])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------- overlay
def test_the_overlay_holds_only_the_tuned_keys_and_merges_over_the_base(tmp_path):
    base = tmp_path / "steep.yaml"
    base.write_text(
        "training:\n  epochs: 1\n  batch_size: 8\n  lora: {r: 16, alpha: 32}\nserving:\n  port: 3001\n"
    )
    settings = {
        "training.learning_rate": 0.0006132,
        "training.lora.r": 32,
        "training.lora.target_modules": ["q_proj", "v_proj"],
        "serving.max_new_tokens": 64,
    }
    text = overlay_yaml(
        settings, ["steep tune overlay: test", "", "use: steep run -c steep.yaml -c tuned.yaml"]
    )
    assert text.startswith(OVERLAY_MARK)
    overlay = tmp_path / "tuned.yaml"
    overlay.write_text(text)
    merged = load_config([base, overlay], environ={})
    assert merged.training.learning_rate == 0.0006132 and merged.training.lora.r == 32
    assert merged.training.lora.target_modules == ["q_proj", "v_proj"] and merged.serving.max_new_tokens == 64
    assert merged.training.lora.alpha == 32 and merged.training.batch_size == 8  # untouched keys stay
    assert merged.serving.port == 3001
    # the --set lines say the same thing
    args = [line.split(" ", 1)[1].strip("'") for line in set_lines(settings)]
    assert load_config(base, args, environ={}) == merged
    assert '--set \'training.lora.target_modules=["q_proj", "v_proj"]\'' in set_lines(settings)


def test_the_overlay_never_goes_over_a_config_or_a_file_steep_tune_did_not_write(tmp_path):
    base = tmp_path / "steep.yaml"
    base.write_text("training: {epochs: 1}\n")
    with pytest.raises(TuneError, match="is a config file this tune reads"):
        check_output(base, [base])
    other = tmp_path / "notes.yaml"
    other.write_text("mine: true\n")
    with pytest.raises(TuneError, match="exists and was not written by steep tune"):
        check_output(other, [base])
    assert other.read_text() == "mine: true\n"
    earlier = tmp_path / "tuned.yaml"
    earlier.write_text(overlay_yaml({"training.epochs": 2}, ["steep tune overlay: earlier"]))
    assert check_output(earlier, [base]) == earlier.resolve()
    assert check_output(tmp_path / "new.yaml", [base]) == (tmp_path / "new.yaml").resolve()


# --------------------------------------------------------------------------------------------- the search
def test_when_no_trial_finishes_there_is_an_error_no_overlay_and_a_failed_parent_run(
    tmp_path, monkeypatch, embedded_mlflow
):
    cfg = toy_config(tmp_path, tune={"trials": 2, "space": {"training.batch_size": {"choice": [4096]}}})
    splits = split_dataset(toy_frame(60), cfg.data.split, cfg.project.seed)

    class NoRay:  # the search itself is replaced: this test is about what happens after it
        def __init__(self, address):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def connect(self):
            return [2]

    failed = [outcome(1, "failed", reason="TrainingError: too big"), outcome(2, "failed", reason="x")]
    monkeypatch.setattr(tuning.training, "RaySession", NoRay)
    monkeypatch.setattr(tuning, "_search", lambda *a, **k: failed)
    output = tmp_path / "tuned.yaml"
    with pytest.raises(TuneError, match="none of the 2 trials finished") as err:
        tuning.tune(cfg, splits, output=output, config_files=[tmp_path / "steep.yaml"])
    assert "TrainingError: too big" in str(err.value)
    assert not output.exists()
    client = mlflow.MlflowClient()
    (parent,) = client.search_runs([client.get_experiment_by_name(cfg.project.name).experiment_id])
    assert parent.data.tags[tuning.KIND_TAG] == "tune" and parent.info.status == "FAILED"
    assert parent.data.params["tune.trials"] == "2"
    assert "data.digest.test" not in parent.data.params and "data.digest.validation" in parent.data.params


def test_an_empty_validation_split_is_refused_before_anything_runs(tmp_path):
    cfg = toy_config(tmp_path)
    splits = split_dataset(toy_frame(60), cfg.data.split, cfg.project.seed)
    splits = dataclasses.replace(splits, validation=splits.validation.head(0))
    with pytest.raises(TuneError, match="judges trials on the validation split, and it is empty"):
        tuning.tune(cfg, splits, output=tmp_path / "tuned.yaml")
    assert not (tmp_path / "home" / "mlflow.db").exists()  # nothing recorded


def test_a_plan_knows_the_most_epochs_a_trial_can_train():
    assert SpacePlan({}, {}).max_epochs(2) == 2
    plan = plan_space(with_space({"training.epochs": {"randint": [1, 4]}}))
    assert plan.max_epochs(1) == 4
    assert math.isclose(settle(pd.Series([0.12345]).iloc[0]), 0.1235)  # numpy floats settle too


def test_early_stopping_stops_the_worse_half_but_never_the_defaults():
    from ray.tune.schedulers import TrialScheduler

    class Trial:
        def __init__(self, trial_id):
            self.trial_id, self.config = trial_id, {}

    stopped: dict[str, int] = {}
    asha = tuning._asha(3, stopped, defaults=True, base_epochs=3)
    defaults, good, bad = Trial("abcde_00000"), Trial("abcde_00001"), Trial("abcde_00002")
    for trial in (defaults, good, bad):
        asha.on_trial_add(None, trial)
    assert asha.on_trial_result(None, good, {"epoch": 1, "val_loss": 2.0}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, bad, {"epoch": 1, "val_loss": 4.0}) == TrialScheduler.STOP
    assert stopped == {"abcde_00002": 1}
    # the defaults are worse than both: ASHA would stop them, steep keeps them as the reference
    assert asha.on_trial_result(None, defaults, {"epoch": 1, "val_loss": 5.0}) == TrialScheduler.CONTINUE
    assert "abcde_00000" not in stopped
    # reaching the last epoch does not stop a trial: it still has to be scored
    assert asha.on_trial_result(None, good, {"epoch": 3, "val_loss": 1.0}) == TrialScheduler.CONTINUE


def test_a_trial_that_trained_its_last_epoch_is_scored_even_when_behind_on_loss():
    from ray.tune.schedulers import TrialScheduler

    class Trial:
        def __init__(self, trial_id, epochs=None):
            self.trial_id, self.config = trial_id, {} if epochs is None else {"training.epochs": epochs}

    stopped: dict[str, int] = {}
    asha = tuning._asha(2, stopped, defaults=False, base_epochs=2)
    leader, short, behind = Trial("abcde_00000"), Trial("abcde_00001", epochs=1), Trial("abcde_00002")
    for trial in (leader, short, behind):
        asha.on_trial_add(None, trial)
    assert asha.on_trial_result(None, leader, {"epoch": 1, "val_loss": 2.0}) == TrialScheduler.CONTINUE
    # a 1-epoch trial behind at epoch 1 has finished training: only its generation is left
    assert asha.on_trial_result(None, short, {"epoch": 1, "val_loss": 3.0}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, leader, {"epoch": 2, "val_loss": 1.5}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, behind, {"epoch": 1, "val_loss": 1.9}) == TrialScheduler.CONTINUE
    # at epoch 2 (this trial's last) ASHA's rung would stop it: it is scored instead
    assert asha.on_trial_result(None, behind, {"epoch": 2, "val_loss": 1.6}) == TrialScheduler.CONTINUE
    assert stopped == {}
    # a 2-epoch trial behind at epoch 1 still stops there
    late = Trial("abcde_00003")
    asha.on_trial_add(None, late)
    assert asha.on_trial_result(None, late, {"epoch": 1, "val_loss": 9.0}) == TrialScheduler.STOP
    assert stopped == {"abcde_00003": 1}


def test_a_trials_outcome_says_how_it_ended():
    plan = plan_space(with_space({"training.learning_rate": {"loguniform": [1e-4, 1e-3]}}))
    config = {"training.learning_rate": 0.000123456}
    scored = {"epoch": 2, "step": 10, "val_loss": 2.5, "val_score": 0.21, "val_rougeL": 0.21, "run_id": "r1"}

    def ended(trial_id, last, **kw):
        options = {"error": None, "stopped": {"abcde_00001": 1}, "budget_hit": False, "show_node": False}
        return tuning._outcome(trial_id, config, last, 0.0, plan=plan, defaults=True, **{**options, **kw})

    done = ended("abcde_00000", scored)
    assert (done.status, done.val_score, done.run_id, done.is_defaults) == ("finished", 0.21, "r1", True)
    assert done.settings == {"training.learning_rate": 0.0001235} and done.val_loss == 2.5
    early = ended("abcde_00001", {"epoch": 1, "step": 5, "val_loss": 3.0})
    assert early.status == "stopped" and early.reason.startswith("stopped early at epoch 1 (ASHA")
    late = ended("abcde_00002", {"epoch": 1, "step": 5, "val_loss": 3.0}, budget_hit=True)
    assert (late.status, late.reason) == ("stopped", "stopped by the time budget")
    broken = ended("abcde_00003", {}, error=ValueError("bad value"))
    assert (broken.status, broken.reason, broken.is_defaults) == ("failed", "ValueError: bad value", False)


def test_a_space_of_choices_is_drawn_without_repeats_defaults_first():
    cfg = with_space(
        {"training.learning_rate": {"choice": [1e-3, 2e-3]}, "training.lora.r": {"choice": [8, 16]}},
        training={"learning_rate": 2e-3, "lora": {"r": 16}},
    )
    plan = plan_space(cfg)
    every = plan.distinct_points(8, include_defaults=True, seed=1)
    assert len(every) == 4 and every[0] == {"training.learning_rate": 2e-3, "training.lora.r": 16}
    assert len({tuple(sorted(p.items())) for p in every}) == 4  # no setting twice
    assert plan.distinct_points(2, include_defaults=False, seed=1) == plan.distinct_points(2, False, seed=1)
    assert len(plan.distinct_points(3, include_defaults=False, seed=1)) == 3
    ranged = plan_space(with_space({"training.learning_rate": {"loguniform": [1e-4, 1e-3]}}))
    assert ranged.distinct_points(4, include_defaults=True, seed=1) is None  # Ray Tune samples ranges
