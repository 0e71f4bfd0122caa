"""The overlay (steep.pipeline.tune.overlay): only the tuned keys, merged over the base config, the same as
`--set` arguments; it never goes over a config file or a file steep tune did not write."""

from __future__ import annotations

import pytest

from steep.config import load_config
from steep.pipeline.tune import OVERLAY_MARK, TuneError, check_output, overlay_yaml, set_lines


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
