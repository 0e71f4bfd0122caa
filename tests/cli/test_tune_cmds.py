"""`-c` overlays merged in order, and `steep tune` as a command (the search itself replaced here: the real
one is tests/steep/pipeline/tune/test_search_on_ray.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import steep.cli  # noqa: F401  (registers every command on the app)
from steep.cli.app import app, console
from steep.config import ConfigError, load_config
from steep.pipeline import tune
from steep.pipeline.tune import TrialOutcome, TuneResult

runner = CliRunner()


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------- -c overlays
def test_later_config_files_are_merged_over_earlier_ones_key_by_key(tmp_path):
    base = write(
        tmp_path, "steep.yaml", "training:\n  epochs: 1\n  batch_size: 8\n  lora: {r: 16, alpha: 32}\n"
    )
    tuned = write(tmp_path, "tuned.yaml", "training:\n  epochs: 3\n  lora: {r: 32}\n")
    more = write(tmp_path, "more.yaml", "training:\n  lora:\n    r: 8\n    target_modules: [q_proj]\n")
    cfg = load_config([base, tuned, more], environ={})
    assert (cfg.training.epochs, cfg.training.batch_size) == (3, 8)
    assert (cfg.training.lora.r, cfg.training.lora.alpha) == (8, 32)  # the last file wins, the rest stays
    assert cfg.training.lora.target_modules == ["q_proj"]
    assert load_config([base, tuned], ["training.epochs=5"], environ={}).training.epochs == 5  # --set wins
    assert cfg.root == tmp_path  # paths are the first file's project's


def test_the_command_line_merges_repeated_c_in_order(tmp_path):
    base = write(tmp_path, "steep.yaml", "training: {epochs: 1, batch_size: 8}\n")
    tuned = write(tmp_path, "tuned.yaml", "training: {epochs: 3}\n")
    result = runner.invoke(app, ["config", "show", "-c", str(base), "-c", str(tuned)])
    assert result.exit_code == 0, result.output
    assert "  epochs: 3\n" in result.output and "  batch_size: 8\n" in result.output
    result = runner.invoke(app, ["config", "show", "-c", str(tuned), "-c", str(base)])
    assert "  epochs: 1\n" in result.output


def test_a_missing_or_bad_overlay_is_named(tmp_path):
    base = write(tmp_path, "steep.yaml", "training: {epochs: 1}\n")
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: no such config file \(an overlay given after"):
        load_config([base, tmp_path / "nowhere.yaml"], environ={})
    bad = write(tmp_path, "tuned.yaml", "training: {epochs: 0}\n")
    with pytest.raises(ConfigError, match=r"steep\.yaml \+ .*tuned\.yaml: invalid config\ntraining\.epochs"):
        load_config([base, bad], environ={})
    broken = write(tmp_path, "broken.yaml", "training: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config([base, broken], environ={})


# --------------------------------------------------------------------------------------------- steep tune
def test_steep_tune_prints_the_best_and_how_to_use_it_and_leaves_steep_yaml_alone(
    tmp_path, monkeypatch, legal_jsonl
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(console, "width", 200)
    text = (
        f"project: {{home: {tmp_path / 'home'}}}\n"
        f"data: {{source: {legal_jsonl}, sha256: null, id_column: id, text_column: source_text,\n"
        "       summary_column: summary, group_column: doc}\n"
        "tune:\n  space:\n    training.learning_rate: {loguniform: [1.0e-4, 1.0e-3]}\n"
    )
    base = write(tmp_path, "steep.yaml", text)
    seen = {}

    def fake_tune(cfg, splits, *, output, config_files, tracking_uri, ray_address, log):
        seen.update(cfg=cfg, splits=splits, output=output, files=config_files)
        log("trial 1/3 finished in 1 s: learning_rate=0.0003 (the defaults) | val ROUGE-L 20.00")
        best = TrialOutcome(2, "a_00001", {"training.learning_rate": 0.0006132}, "finished", val_score=0.2512)
        defaults = TrialOutcome(1, "a_00000", {"training.learning_rate": 0.0003}, "finished", val_score=0.2,
                                is_defaults=True)  # fmt: skip
        output.write_text("# steep tune overlay: fake\ntraining:\n  learning_rate: 0.0006132\n")
        return TuneResult("parent123", "steep-tune-x", "rougeL", [defaults, best], best, defaults, output,
                          {"training.learning_rate": 0.0006132}, ["--set training.learning_rate=0.0006132"],
                          3, 12.0)  # fmt: skip

    monkeypatch.setattr(tune, "tune", fake_tune)
    before = base.read_bytes()
    result = runner.invoke(app, ["tune", "--trials", "3", "--time-budget", "10m"])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert (cfg.tune.trials, cfg.tune.time_budget) == (3, "10m")  # the flags reach the config
    assert seen["output"] == tmp_path / "tuned.yaml" and seen["files"] == [base]
    assert seen["splits"].validation["group"].nunique() >= 1  # data validated and split as `steep run` does
    out = result.output
    assert "3 trials within 10m on a local Ray, over training.learning_rate" in out
    assert "the test split is not used" in out
    assert "trial 1/3 finished" in out
    assert "best trial 2/3: validation ROUGE-L 25.12 (the defaults, trial 1: 20.00)" in out
    assert "use it:  steep run -c steep.yaml -c tuned.yaml" in out
    assert "or:      steep run --set training.learning_rate=0.0006132" in out
    assert base.read_bytes() == before


def test_steep_tune_refuses_a_bad_flag_through_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "steep.yaml", "project: {name: x-test}\n")
    result = runner.invoke(app, ["tune", "--time-budget", "soon"])
    assert isinstance(result.exception, ConfigError)
    assert "tune.time_budget: a duration like 90s" in str(result.exception)
