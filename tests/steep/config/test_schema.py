"""steep.yaml's schema (steep.config.schema, steep.config.sections): the shipped configs validate, the
defaults, the rules across fields, the JSON Schema and a YAML round trip, durations."""

from pathlib import Path

import pytest

from steep.config import ConfigError, SteepConfig, config_schema, dump_config, load_config, parse_duration

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "steep.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_shipped_config_validates():
    shipped = [REPO / "steep.yaml", *sorted((REPO / "configs").glob("*.yaml"))]
    for path in shipped:
        assert isinstance(load_config(path, environ={}), SteepConfig), path


def test_the_defaults_are_what_the_shipped_config_found_best():
    """What `steep init` writes: 15% validation (5% was too few rows for `steep tune` to judge), training in
    the run's own process, and an instruction that names no particular kind of text."""
    defaults, shipped = SteepConfig(), load_config(REPO / "steep.yaml", environ={})
    assert (defaults.data.split.train, defaults.data.split.validation, defaults.data.split.test) == (
        0.7,
        0.15,
        0.15,
    )
    assert shipped.data.split == defaults.data.split
    assert shipped.training.workers == defaults.training.workers == 0
    assert defaults.model.instruction == "Summarize this text in one sentence."


def _leaves(node: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out |= _leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _commented(lines: list[str], dotted: str) -> bool:
    """The line that sets `dotted` (or the flow mapping holding it) has a trailing comment or one above."""
    at, depth = 0, 0
    for part in dotted.split("."):
        pad = "  " * depth
        found = next((i for i in range(at, len(lines)) if lines[i].startswith(f"{pad}{part}:")), None)
        if found is None:  # a key inside a flow mapping: the mapping's own line carries the comment
            break
        at, depth = found, depth + 1
    return " # " in lines[at] or lines[at - 1].lstrip().startswith("#")


def test_the_shipped_config_says_why_wherever_it_differs_from_the_defaults():
    shipped = _leaves(load_config(REPO / "steep.yaml", environ={}).model_dump(mode="json"))
    defaults = _leaves(SteepConfig().model_dump(mode="json"))
    differ = sorted(k for k, v in shipped.items() if v != defaults[k] and not k.startswith("project.home"))
    assert differ == [
        "model.instruction",
        "model.max_source_tokens",
        "training.learning_rate",
        "training.lora.layers",
    ]
    lines = (REPO / "steep.yaml").read_text(encoding="utf-8").splitlines()
    assert [k for k in differ if not _commented(lines, k)] == []


def test_cross_field_rules(tmp_path):
    with pytest.raises(
        ConfigError, match=r"data.split: train \+ validation \+ test must add up to 1, got 1.1"
    ):
        load_config(
            write(tmp_path, "data:\n  split: {train: 0.9, validation: 0.05, test: 0.15}\n"), environ={}
        )
    with pytest.raises(ConfigError, match="serving: min_replicas"):
        load_config(write(tmp_path, "serving: {min_replicas: 5, max_replicas: 2}\n"), environ={})


def test_schema_and_round_trip(tmp_path):
    schema = config_schema()
    assert set(schema["properties"]) == {
        "project",
        "stack",
        "data",
        "validation",
        "model",
        "training",
        "evaluation",
        "serving",
        "drift",
        "tune",
    }
    cfg = load_config(REPO / "steep.yaml", ["training.epochs=4"], environ={})
    again = load_config(write(tmp_path, dump_config(cfg)), environ={})
    assert again == cfg


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("4h", 14400), ("2d", 172800), (30, 30)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_bad_duration(tmp_path):
    with pytest.raises(ConfigError, match=r"stack\.ttl: a duration like 90s"):
        load_config(write(tmp_path, "stack: {ttl: soon}\n"), environ={})


def test_evaluation_max_new_tokens_moved_to_serving(tmp_path):
    """Evaluation generates as the server does: an older file's different length is an error, not ignored."""
    with pytest.raises(ConfigError, match=r"moved to serving\.max_new_tokens") as err:
        load_config(write(tmp_path, "evaluation:\n  max_new_tokens: 64\n"), environ={})
    assert "evaluation.max_new_tokens (64)" in str(err.value)
    same = "evaluation:\n  max_new_tokens: 32\nserving:\n  max_new_tokens: 32\n"
    assert load_config(write(tmp_path, same), environ={}).serving.max_new_tokens == 32


def test_serving_precision_takes_auto_fp32_bf16_int8_or_int4(tmp_path):
    assert load_config(write(tmp_path, ""), environ={}).serving.precision == "auto"
    chosen = load_config(write(tmp_path, "serving: {precision: bf16}\n"), environ={})
    assert chosen.serving.precision == "bf16"
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "serving: {precision: fp16}\n"), environ={})
    assert "serving.precision: must be 'auto', 'fp32', 'bf16', 'int8' or 'int4', got 'fp16'" in str(err.value)
    quantized = load_config(write(tmp_path, "serving: {precision: int4}\n"), environ={})
    assert quantized.serving.precision == "int4"


def test_serving_engine_takes_auto_transformers_or_onnxruntime(tmp_path):
    assert load_config(write(tmp_path, ""), environ={}).serving.engine == "auto"
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "serving: {engine: vllm}\n"), environ={})
    assert "serving.engine: must be 'auto', 'transformers' or 'onnxruntime', got 'vllm'" in str(err.value)
