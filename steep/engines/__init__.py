"""Inference engines: what runs a prepared model's forward passes, for evaluation and serving alike.

- `transformers`: eager PyTorch (steep.generation.Decoder), the reference and the fallback: every model kind,
  fp32 or bf16, CPU or GPU.
- `onnxruntime`: the merged model exported once by ONNX Runtime GenAI's model builder (fp32, or int8/int4
  weights), run by ONNX Runtime under steep's own iteration-level batching (steep.engines.onnx_decoder), so
  requests keep every setting they have on the reference engine. In fp32 it writes the same token ids.

`auto` picks onnxruntime for a plain causal LM of an architecture the builder exports, on a CPU at fp32, int8
or int4; elsewhere (bf16, a GPU, seq2seq, soft prompts) transformers, whose bf16 path was measured faster on
CPUs with AMX than any exported engine (docs/engines.md has the figures and why each other engine lost).
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from steep.errors import SteepError

EngineName = Literal["auto", "transformers", "onnxruntime"]  # serving.engine
QUANTIZED = ("int8", "int4")  # precisions only the onnxruntime engine serves (quantized weights)
ONNX_PRECISIONS = ("fp32", *QUANTIZED)  # what the onnxruntime engine serves on a CPU
# model types ONNX Runtime GenAI's builder exports and steep checked token for token (llama: SmolLM2)
ONNX_ARCHITECTURES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "granite"})


class EngineError(SteepError):
    """The engine asked for cannot run this model here."""


def onnxruntime_installed() -> bool:
    modules = ("onnxruntime", "onnxruntime_genai", "onnx_ir")
    return all(importlib.util.find_spec(m) is not None for m in modules)


def why_not_onnx(model: Any, precision: str, device_type: str, causal: bool) -> str | None:
    """None when the onnxruntime engine can run this prepared model, else the reason in words."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not causal or getattr(config, "is_encoder_decoder", False):
        return "it runs causal language models only (this one is seq2seq)"
    if getattr(model, "peft_config", None):
        return "it runs plain or LoRA-merged models only (this one keeps a PEFT soft prompt or adapter)"
    if model_type not in ONNX_ARCHITECTURES:
        return f"ONNX Runtime GenAI's builder does not export model type {model_type!r}"
    heads = getattr(config, "num_attention_heads", 0) or 1
    head_size = getattr(config, "head_dim", None) or getattr(config, "hidden_size", 0) // heads
    if head_size % 16:
        return f"ONNX Runtime's attention kernel needs a head size that is a multiple of 16, not {head_size}"
    if device_type != "cpu":
        return f"steep runs it on CPUs only (the model is on {device_type})"
    if precision not in ONNX_PRECISIONS:
        return f"it serves {', '.join(ONNX_PRECISIONS)} on a CPU, not {precision}"
    if not onnxruntime_installed():
        return "onnxruntime, onnxruntime-genai or onnx-ir is not installed (`pip install steep` brings them)"
    return None


def resolve_engine(engine: str, model: Any, precision: str, device_type: str, causal: bool) -> str:
    """`auto` -> onnxruntime where it runs, else transformers; an explicit choice must be able to run."""
    reason = why_not_onnx(model, precision, device_type, causal)
    if engine == "onnxruntime" and reason is not None:
        raise EngineError(
            f"serving.engine: onnxruntime cannot serve this model here: {reason}. "
            "Set serving.engine: auto (or transformers) in steep.yaml"
            + (", and serving.precision: auto, fp32 or bf16" if precision in QUANTIZED else "")
            + "."
        )
    if engine == "transformers" and precision in QUANTIZED:
        raise EngineError(
            f"serving.precision: {precision} needs the onnxruntime engine (transformers serves fp32 and "
            "bf16); set serving.engine: auto or onnxruntime, or serving.precision: auto."
        )
    if engine == "auto" and reason is not None and precision in QUANTIZED:
        raise EngineError(
            f"serving.precision: {precision} needs the onnxruntime engine, which cannot serve this model "
            f"here: {reason}. Set serving.precision: auto (fp32 or bf16)."
        )
    if engine == "auto":
        return "onnxruntime" if reason is None else "transformers"
    return engine
