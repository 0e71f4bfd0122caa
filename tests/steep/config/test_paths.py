"""Dotted keys (steep.config.paths): the one pair of helpers that --set, STEEP__ variables, the tune space
and its overlay read and write keys with."""

import pytest

from steep.config import ConfigError, SteepConfig, get_path, leaf_keys, set_path


def test_set_path_makes_the_sections_on_the_way_and_get_path_reads_them_back():
    data: dict = {"training": {"epochs": 1}}
    set_path(data, "training.lora.r", 8)
    set_path(data, "serving.max_new_tokens", 64)
    assert data == {"training": {"epochs": 1, "lora": {"r": 8}}, "serving": {"max_new_tokens": 64}}
    assert get_path(data, "training.lora.r") == 8 and get_path(data, "training") == {
        "epochs": 1,
        "lora": {"r": 8},
    }
    with pytest.raises(KeyError):
        get_path(data, "training.lora.alpha")


def test_a_key_that_cannot_be_set_is_a_config_error_that_says_where_it_came_from():
    with pytest.raises(ConfigError, match=r"^--set \.=3: empty key; write section\.key=value"):
        set_path({}, ".", 3, "--set .=3")
    with pytest.raises(ConfigError, match=r"^environment variable X: epochs is not a section, cannot set"):
        set_path({"training": {"epochs": 1}}, "training.epochs.x", 3, "environment variable X")
    with pytest.raises(ConfigError, match=r"^key 'training\.epochs\.x': epochs is not a section"):
        set_path({"training": {"epochs": 1}}, "training.epochs.x", 3)


def test_leaf_keys_walk_the_sections():
    keys = leaf_keys(SteepConfig)
    assert {"training.lora.r", "data.split.validation", "tune.space", "project.seed"} <= set(keys)
    assert "training.lora" not in keys and "training" not in keys
