"""Evaluation and serving produce the same text for the same input and version: the gate scores what
users get (same registry version, same preparation: LoRA merged, same precision, same generation code)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import mlflow
import peft
import pytest
import torch

from steep import logged_model, models, tracking
from steep.config import SteepConfig
from steep.registry import Registry, model_name
from steep.scoring.candidates import pyfunc_summarizer
from steep.serving.engine import Engine
from steep.serving.model_slot import registry_slot
from tests.conftest_train import INSTRUCTION

TEXTS = [
    "alpha bravo charlie",
    "delta echo foxtrot golf hotel india juliet",
    "kilo",
    "lima mike november oscar papa",
    "quebec romeo sierra tango alpha bravo charlie delta echo",
]


@pytest.fixture
def embedded_mlflow(monkeypatch):
    """The embedded sqlite store of the test's config, and MLflow pointing nowhere afterwards."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    mlflow.set_tracking_uri(None)


def serving_config(home: Path, precision: str, engine: str = "auto") -> SteepConfig:
    return SteepConfig.model_validate(
        {
            "project": {"home": str(home), "name": "parity"},
            "model": {"max_source_tokens": 24, "max_target_tokens": 6, "instruction": INSTRUCTION},
            "serving": {"max_new_tokens": 6, "precision": precision, "engine": engine},
        }
    )


@pytest.fixture(scope="module")
def causal16_dir(tmp_path_factory) -> Path:
    """The tiny model with heads of 16 dimensions: what the onnxruntime engine runs."""
    from tests.conftest_train import tiny_causal

    return tiny_causal(tmp_path_factory.mktemp("causal16"), heads=2)


def lively_model(causal_dir: Path) -> torch.nn.Module:
    """The tiny model with larger random weights, so each text gets its own answer."""
    from tests.steep.test_generation import liven

    return liven(models.load_model(causal_dir, "causal"))


def artifacts(cfg: SteepConfig, causal_dir: Path, folder: Path, method: str) -> dict[str, str]:
    """A full model folder, or a base model and a LoRA adapter (non-zero, so merging it matters)."""
    fmt = models.PromptFormat.from_config(cfg.model, "causal")
    tokenizer = models.load_tokenizer(causal_dir, "causal")
    model = lively_model(causal_dir)
    base = folder / ("model" if method == "full" else "base")
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    fmt.save(base)
    if method == "full":
        return {"model": str(base)}
    config = peft.LoraConfig(
        task_type=peft.TaskType.CAUSAL_LM, r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    torch.manual_seed(3)
    adapter = folder / "adapter"
    peft.get_peft_model(model, config).save_pretrained(adapter)
    fmt.save(adapter)
    return {"base_model": str(base), "adapter": str(adapter)}


def register(cfg: SteepConfig, files: dict[str, str]) -> str:
    """Log steep's pyfunc in the embedded store, register it and make it the champion."""
    experiment = tracking.setup(cfg)
    with mlflow.start_run(experiment_id=experiment) as run:
        uri = logged_model.log_summarizer(files, cfg.serving.max_new_tokens)
    registry = Registry(model_name(cfg))
    version = registry.register(uri, run.info.run_id, {"steep.test": True})
    registry.promote(version.version, "test")
    return str(version.version)


@pytest.mark.parametrize(
    ("method", "precision", "engine"),
    [("full", "fp32", "transformers"), ("lora", "bf16", "transformers"), ("lora", "fp32", "onnxruntime")],
)
def test_evaluation_and_serving_produce_the_same_text_for_the_same_input_and_version(
    causal_dir, causal16_dir, tmp_path, embedded_mlflow, method, precision, engine
):
    cfg = serving_config(tmp_path / "home", precision, engine)
    folder = causal16_dir if engine == "onnxruntime" else causal_dir
    version = register(cfg, artifacts(cfg, folder, tmp_path / "files", method))

    evaluated = pyfunc_summarizer(f"models:/{model_name(cfg)}/{version}", cfg)
    scored = evaluated.summarize(TEXTS, cfg.serving.max_new_tokens, cfg.evaluation.batch_size)

    slot = registry_slot(cfg)
    slot.refresh()  # what the server loads: the champion
    served = slot.current
    server = Engine(cfg, slot)
    try:  # the serving path: the texts of one request through the batcher, as POST /summarize sends them
        answers = asyncio.run(server.generate(TEXTS, "r"))
    finally:
        server.close()

    assert served.version == version and {model.version for model, _ in answers} == {version}
    assert [c.text for _, c in answers] == scored
    assert len(set(scored)) > 1  # the texts get different answers: the comparison means something
    for summarizer in (evaluated, served.summarizer):
        assert (summarizer.precision, summarizer.engine) == (precision, engine)
        assert not isinstance(summarizer.model, peft.PeftModel)  # LoRA merged on both sides
        assert {p.dtype for p in summarizer.model.parameters()} == {
            torch.bfloat16 if precision == "bf16" else torch.float32
        }
