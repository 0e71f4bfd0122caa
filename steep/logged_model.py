"""The fine-tuned model as MLflow holds it: a pyfunc whose predict generates with `steep.models.Summarizer`,
the same code evaluation and serving use, and how a run logs it.

The model is logged from code (steep/pyfunc_model.py names the class; nothing is pickled) with the steep
package as its code path, so a version loads with the steep it was trained with.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd

MODEL_ARTIFACT = "model"
MODEL_CODE = str(Path(__file__).with_name("pyfunc_model.py"))  # the file that sets SummarizerPyfunc


class SummarizerPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: texts (a DataFrame with a `text` column, a list or a string) -> summaries.

    Artifacts: `base_model` + `adapter` (a PEFT adapter folder), or `model` alone (merged or full weights).
    Params: max_new_tokens, batch_size.
    """

    def load_context(self, context: Any) -> None:
        from steep.models import load_for_inference

        artifacts = context.artifacts
        if "adapter" in artifacts:
            self.summarizer = load_for_inference(artifacts["base_model"], artifacts["adapter"])
        else:
            self.summarizer = load_for_inference(artifacts["model"])

    # Hinted pd.DataFrame: MLflow infers no schema from it (the signature stays the one log_summarizer
    # gives), validates nothing against it and passes the input through as it did without hints. Through a
    # loaded pyfunc the input is always a DataFrame (MLflow enforces the signature first); a direct call
    # may still pass a list or a string (texts_of takes all three).
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> list[str]:
        params = params or {}
        texts = texts_of(model_input)
        return self.summarizer.summarize(
            texts,
            max_new_tokens=int(params.get("max_new_tokens", 48)),
            batch_size=int(params.get("batch_size", 8)),
        )


def texts_of(model_input: Any) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        return [str(t) for t in model_input[column]]
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.Series):
        return [str(t) for t in model_input]
    return [str(t) for t in model_input]


def _requirements() -> list[str]:
    reqs = []
    engine = ("onnxruntime", "onnxruntime-genai", "onnx", "onnx-ir")  # serving.engine: onnxruntime
    for package in ("torch", "transformers", "peft", "safetensors", "tokenizers", "pandas", *engine):
        try:
            reqs.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            reqs.append(package)
    return reqs


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def log_summarizer(
    artifacts: dict[str, str], max_new_tokens: int, staging_dir: str | Path | None = None
) -> str:
    """Log the pyfunc model to the active run; returns its model URI (models:/...).

    artifacts: {"base_model": folder, "adapter": folder} or {"model": folder}.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    import steep

    signature = ModelSignature(  # one unnamed string column: a list of texts and a `text` column both fit
        inputs=Schema([ColSpec("string")]),
        outputs=Schema([ColSpec("string")]),
        params=ParamSchema(
            [ParamSpec("max_new_tokens", "long", max_new_tokens), ParamSpec("batch_size", "long", 8)]
        ),
    )
    # MLflow names each artifact folder after its path, so stage them under their keys (hard links: no copy)
    with tempfile.TemporaryDirectory(dir=staging_dir) as tmp:
        staged = {}
        for key, path in artifacts.items():
            shutil.copytree(path, Path(tmp) / key, copy_function=_link_or_copy)
            staged[key] = str(Path(tmp) / key)
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=MODEL_CODE,  # models-from-code: the class by its import path, nothing pickled
            artifacts=staged,
            code_paths=[str(Path(steep.__file__).parent)],
            pip_requirements=_requirements(),
            signature=signature,
        )
    return info.model_uri
