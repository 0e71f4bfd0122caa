"""steep.yaml rendered from the config model (steep.scaffold.render): every key, default and description,
values put in, and the file loads back to exactly what was rendered."""

from __future__ import annotations

import re

import pytest
import yaml
from pydantic import BaseModel

from steep.config import SteepConfig, load_config
from steep.scaffold.render import model_paths, render_config
from tests.steep.scaffold.conftest import assert_loads_to


def test_rendered_defaults_load_back_to_exactly_the_defaults(tmp_path):
    text = render_config()
    assert yaml.safe_load(text) == SteepConfig().model_dump(mode="json")  # every key, nothing else
    path = tmp_path / "steep.yaml"
    path.write_text(text, encoding="utf-8")
    assert_loads_to(path, SteepConfig())


def _described(model: type[BaseModel] = SteepConfig) -> list[str]:
    out = []
    for info in model.model_fields.values():
        annotation, description = info.annotation, info.description
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += _described(annotation)
        elif description:
            out.append(description)
    return out


def test_every_field_description_is_a_comment():
    text = render_config()
    comments = " ".join(line.split("# ", 1)[1] for line in text.splitlines() if "# " in line)
    missing = [d for d in _described() if " ".join(d.split()) not in comments]
    assert missing == []
    assert re.search(r"^  name: steep +# names the stack, runs and models$", text, re.M)
    assert re.search(r"^  method: lora +# lora \| prompt_tuning \| full$", text, re.M)
    assert all(len(line) <= 110 for line in text.splitlines())
    head = text.split("\n\n", 1)[0]
    assert "steep config show" in head and "steep validate" in head and "steep run" in head


def test_values_are_put_in_and_load_back(tmp_path):
    values = {
        "project.name": "legal-bot",
        "data.source": "data/x: y.csv",
        "data.sha256": None,
        "data.group_column": None,
        "training.lora.target_modules": ["q_proj", "v_proj"],
        "drift.schedule": "*/5 * * * *",
        "model.instruction": "yes",
    }
    path = tmp_path / "steep.yaml"
    path.write_text(render_config(values), encoding="utf-8")
    expected = SteepConfig().model_dump(mode="json")
    for dotted, value in values.items():
        node = expected
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    assert_loads_to(path, SteepConfig.model_validate(expected))
    assert load_config(path, environ={}).data.source == str(tmp_path / "data" / "x: y.csv")
    assert "target_modules: [q_proj, v_proj]" in path.read_text()


def test_render_rejects_keys_the_model_does_not_have():
    with pytest.raises(ValueError, match=r"data\.text_col"):
        render_config({"data.text_col": "x"})
    assert "training.lora.r" in model_paths() and "data.split" not in model_paths()
