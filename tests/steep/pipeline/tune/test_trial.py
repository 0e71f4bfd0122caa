"""A trial (steep.pipeline.tune.trial): what it is shipped (never the test split), its config, and the
user's error found inside Ray's wrappers. A trial that really runs is test_search_on_ray.py."""

from __future__ import annotations

import pickle

from steep.config import SteepConfig
from steep.data import split_dataset
from steep.pipeline.tune import short_error, trial_config, trial_context
from tests.conftest_train import toy_frame
from tests.steep.pipeline.conftest import toy_config


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
