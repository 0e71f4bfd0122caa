"""Reading steep.yaml (steep.config.loading): defaults without a file, errors that name the key, the value
and the fix (with a did-you-mean), broken files, STEEP__ variables and --set overrides."""

from pathlib import Path

import pytest

from steep.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "steep.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_when_no_file_and_no_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(environ={})
    assert cfg.training.method == "lora" and cfg.data.group_column == "doc"


def test_error_names_path_value_and_bound(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "training:\n  epochs: 0\n"), environ={})
    assert "training.epochs: must be >= 1, got 0" in str(err.value)


def test_unknown_key_suggests_the_close_one(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "training:\n  epohcs: 2\n"), environ={})
    msg = str(err.value)
    assert "training.epohcs: unknown key" in msg and "did you mean 'epochs'" in msg


def test_unknown_section_suggests_the_close_one(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'training'"):
        load_config(write(tmp_path, "trainig:\n  epochs: 2\n"), environ={})


def test_wrong_type_and_bad_choice(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "training:\n  method: qlora\n  batch_size: many\n"), environ={})
    msg = str(err.value)
    assert "training.method: must be 'lora', 'prompt_tuning' or 'full', got 'qlora'" in msg
    assert "training.batch_size:" in msg and "'many'" in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [("training: [\n", "not valid YAML at line 2"), ("- a\n- b\n", "top level must be a mapping")],
)
def test_broken_yaml(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, text), environ={})


def test_non_utf8_config(tmp_path):
    path = tmp_path / "steep.yaml"
    path.write_bytes(b"project:\n  name: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path, environ={})


def test_missing_file_when_asked_for(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_overrides_env_then_set_wins(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 1\n")
    env = {"STEEP__TRAINING__EPOCHS": "3", "STEEP__TRAINING__LORA__R": "8", "OTHER": "x"}
    cfg = load_config(path, environ=env)
    assert cfg.training.epochs == 3 and cfg.training.lora.r == 8
    cfg = load_config(
        path, ["training.epochs=5", "training.lora.target_modules=[q_proj, v_proj]"], environ=env
    )
    assert cfg.training.epochs == 5 and cfg.training.lora.target_modules == ["q_proj", "v_proj"]


def test_bad_override_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config(write(tmp_path, ""), ["training.epochs"], environ={})
    env = {"STEEP__TRAINING__EPOCHS__X": "1"}
    with pytest.raises(
        ConfigError, match="environment variable STEEP__TRAINING__EPOCHS__X: epochs is not a section"
    ):
        load_config(write(tmp_path, "training: {epochs: 1}\n"), environ=env)
