"""Export a prepared (LoRA-merged) causal LM to ONNX once, with ONNX Runtime GenAI's model builder.

The export is keyed by the weights, the config and the precision, so one model version is exported once per
machine and precision: evaluation exports it, and a server on the same machine (or the bento that ships the
export beside the version) finds it. A 135M-parameter model exports in ~10 s on 2 cores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from steep.engines import EngineError

log = logging.getLogger("steep.engines")

ONNX_FILE = "model.onnx"
FORMAT = 2  # what steep does to the builder's graph (last_position_logits): a change re-exports
KEEP = 8  # exports kept per cache, the most recently used: every `steep tune` trial exports its own model
_BUILDER = "onnxruntime_genai.models.builder"


def export_key(model: Any, precision: str) -> str:
    """A digest of what the export depends on: every weight, the config, the precision, the builder."""
    import torch

    digest = hashlib.blake2b(digest_size=12)
    digest.update(json.dumps([precision, version("onnxruntime-genai"), FORMAT]).encode())
    digest.update(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def export(model: Any, tokenizer: Any, precision: str, cache: Path) -> Path:
    """The folder with model.onnx for this model at this precision: from the cache, else exported now."""
    out = Path(cache) / export_key(model, precision)
    if (out / ONNX_FILE).is_file():
        os.utime(out)  # used now: the last to be pruned
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        source, target = Path(tmp, "hf"), Path(tmp, "onnx")
        model.save_pretrained(source)  # fp32 weights: the builder quantizes them itself for int8/int4
        tokenizer.save_pretrained(source)
        _build(source, target, precision)
        last_position_logits(target / ONNX_FILE)
        try:
            os.replace(target, out)
        except OSError:  # another process exported the same model meanwhile: theirs is as good
            if not (out / ONNX_FILE).is_file():
                raise
    log.info("exported the model to ONNX (%s) in %.1f s: %s", precision, time.monotonic() - started, out)
    prune(out.parent, keep=KEEP)
    return out


def prune(cache: Path, keep: int) -> None:
    """Remove all but the `keep` most recently used exports (a process that loaded one keeps its copy)."""
    exports = [d for d in cache.iterdir() if d.is_dir() and not d.name.startswith(".")]
    for old in sorted(exports, key=lambda d: d.stat().st_mtime, reverse=True)[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def last_position_logits(path: Path) -> None:
    """Cut the hidden states to the last position before the LM head: a prefill needs the next token's
    logits only, and the head over every prompt position was a fifth of a prefill's work (SmolLM2-135M)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # the graph only: the weights stay where they are
    graph = model.graph
    [head] = [n for n in graph.node if "logits" in n.output]  # MatMul, or MatMulNBits for int8/int4
    hidden = head.input[0]
    consts = {"steep/last/starts": -1, "steep/last/ends": 2**62, "steep/last/axes": 1}
    graph.initializer.extend(
        onnx.numpy_helper.from_array(np.array([v], np.int64), k) for k, v in consts.items()
    )
    cut = onnx.helper.make_node("Slice", [hidden, *consts], ["steep/last/hidden"], name="steep/last/Slice")
    head.input[0] = "steep/last/hidden"
    graph.node.insert(list(graph.node).index(head), cut)
    onnx.save(model, str(path))


def _build(source: Path, target: Path, precision: str) -> None:
    """Run the builder in a child process: its memory and its prints stay out of this one."""
    command = [sys.executable, "-m", _BUILDER, "-i", str(source), "-o", str(target), "-p", precision]
    command += ["-e", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0 or not (target / ONNX_FILE).is_file():
        shutil.rmtree(target, ignore_errors=True)
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise EngineError(
            f"exporting the model to ONNX ({precision}) failed:\n{tail}\n"
            "Serve it with serving.engine: transformers in steep.yaml, or report the model type."
        )
