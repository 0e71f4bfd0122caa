"""The space plan (steep.pipeline.tune.space): every value of `tune.space` checked against the config before
any trial runs, the defaults' values, how Ray Tune samples the space, and a space of choices drawn without
repeats. What `tune.space` may name at all is tests/steep/config/test_space.py."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from steep.config import SteepConfig
from steep.pipeline.tune import SpacePlan, TuneError, plan_space, settle
from tests.steep.pipeline.tune.conftest import with_space


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


def test_a_plan_knows_the_most_epochs_a_trial_can_train():
    assert SpacePlan({}, {}).max_epochs(2) == 2
    plan = plan_space(with_space({"training.epochs": {"randint": [1, 4]}}))
    assert plan.max_epochs(1) == 4
    assert math.isclose(settle(pd.Series([0.12345]).iloc[0]), 0.1235)  # numpy floats settle too


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
