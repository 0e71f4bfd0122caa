"""What `steep tune` may search (steep.config.space): a bad `tune.space` is refused when the config is read,
with a message that says why the key cannot be tuned or what was meant."""

import pytest
import yaml

from steep.config import NOT_TUNABLE, ConfigError, SteepConfig, load_config, tunable_keys


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
    path.write_text(yaml.safe_dump({"tune": {"space": space}}))
    with pytest.raises(ConfigError, match="invalid config") as err:
        load_config(path, environ={})
    assert fragment in str(err.value)


def test_the_tunable_keys_leave_out_what_changes_no_result_and_the_default_space_uses_only_them():
    keys = tunable_keys()
    assert (
        "training.learning_rate" in keys and "model.instruction" in keys and "serving.max_new_tokens" in keys
    )
    assert not set(NOT_TUNABLE) & set(keys)
    assert set(SteepConfig().tune.space) <= set(keys)
