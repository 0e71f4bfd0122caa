"""The onnxruntime engine against the transformers reference on a tiny model: the same token ids in fp32,
an export made once per weights and precision, `auto`'s choice, clear errors where it cannot run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from steep import models
from steep.engines import EngineError, onnx_export, resolve_engine
from steep.generation import Request
from tests.steep.test_generation import liven, summarizer_of


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with heads of 16 dimensions (ONNX Runtime's attention needs a multiple of 16)."""
    from tests.conftest_train import tiny_causal

    return tiny_causal(tmp_path_factory.mktemp("causal16"), heads=2)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export cache for the module: a model is exported once, as in a project."""
    return tmp_path_factory.mktemp("onnx")


def summarizer(folder: Path, tmp_path: Path) -> models.Summarizer:
    """The tiny model with weights that answer each prompt differently (see test_generation.liven)."""
    return summarizer_of(liven(models.load_model(folder, "causal")), folder, tmp_path)


def requests(tok) -> list[Request]:
    """Prompts of different lengths and limits, so rows join and leave the batch at different steps."""
    words = [
        "the",
        "licensee",
        "shall",
        "not",
        "assign",
        "this",
        "agreement",
        "without",
        "consent",
        "of",
        "the",
        "licensor",
    ]
    prompts = [tok(" ".join(words[: 3 + 2 * i]))["input_ids"] for i in range(6)]
    limits = [5, 12, 3, 9, 12, 7]
    out = [Request(p, max_new_tokens=n) for p, n in zip(prompts, limits, strict=True)]
    out[3].repetition_penalty = 1.3  # a per-row setting the engine must keep
    return out


def test_the_engine_writes_the_reference_token_ids_in_fp32(
    causal_dir: Path, tmp_path: Path, exports: Path
) -> None:
    reference = summarizer(causal_dir, tmp_path).prepare("fp32", "transformers")
    engine = summarizer(causal_dir, tmp_path).prepare("fp32", "onnxruntime", exports)
    assert (reference.engine, engine.engine) == ("transformers", "onnxruntime")
    expected = reference.generate(requests(reference.tokenizer), max_rows=3)
    got = engine.generate(requests(engine.tokenizer), max_rows=3)
    assert [c.completion_tokens for c in got] == [c.completion_tokens for c in expected]
    assert [c.text for c in got] == [c.text for c in expected]
    assert [c.finish_reason for c in got] == [c.finish_reason for c in expected]


def test_streamed_text_adds_up_to_the_answer(causal_dir: Path, tmp_path: Path, exports: Path) -> None:
    engine = summarizer(causal_dir, tmp_path).prepare("fp32", "onnxruntime", exports)
    pieces: list[str] = []
    [request] = requests(engine.tokenizer)[1:2]
    request.on_text = pieces.append
    [done] = engine.generate([request])
    assert "".join(pieces) == done.text


def test_a_model_is_exported_once_per_weights_and_precision(
    causal_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = summarizer(causal_dir, tmp_path).prepare("fp32", "onnxruntime", tmp_path)

    def no_second_export(*args: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_export, "_build", no_second_export)
    again = summarizer(causal_dir, tmp_path).prepare("fp32", "onnxruntime", tmp_path)
    assert again.onnx.folder == first.onnx.folder
    other = summarizer(causal_dir, tmp_path)
    other.model.model.norm.weight.data += 0.5  # other weights: another export
    with pytest.raises(AssertionError, match="exported again"):
        other.prepare("fp32", "onnxruntime", tmp_path)


def test_the_cache_keeps_the_most_recently_used_exports(tmp_path: Path) -> None:
    for age, name in enumerate(["newest", "used", "older", "oldest"]):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (1e9 - age, 1e9 - age))
    (tmp_path / ".export-in-progress").mkdir()
    onnx_export.prune(tmp_path, keep=2)
    assert sorted(d.name for d in tmp_path.iterdir()) == [".export-in-progress", "newest", "used"]


def test_int4_weights_are_smaller_and_still_generate(causal_dir: Path, tmp_path: Path, exports: Path) -> None:
    fp32 = summarizer(causal_dir, tmp_path).prepare("fp32", "onnxruntime", exports)
    int4 = summarizer(causal_dir, tmp_path).prepare("int4", "onnxruntime", exports)
    assert int4.precision == "int4" and int4.onnx.folder != fp32.onnx.folder
    size = {s: sum(f.stat().st_size for f in s.onnx.folder.iterdir()) for s in (fp32, int4)}
    assert size[int4] < size[fp32]
    asked = requests(int4.tokenizer)
    done = int4.generate(asked)
    assert all(0 < c.completion_tokens <= r.max_new_tokens for c, r in zip(done, asked, strict=True))


def test_auto_picks_onnxruntime_for_a_causal_lm_on_a_cpu_at_fp32(causal_dir: Path, tmp_path: Path) -> None:
    model = summarizer(causal_dir, tmp_path).model
    assert resolve_engine("auto", model, "fp32", "cpu", causal=True) == "onnxruntime"
    assert resolve_engine("auto", model, "int4", "cpu", causal=True) == "onnxruntime"
    assert resolve_engine("auto", model, "bf16", "cpu", causal=True) == "transformers"
    assert resolve_engine("auto", model, "fp32", "cuda", causal=True) == "transformers"
    assert resolve_engine("transformers", model, "fp32", "cpu", causal=True) == "transformers"


def test_auto_keeps_heads_onnxruntime_cannot_run_on_transformers(tmp_path: Path) -> None:
    from tests.conftest_train import tiny_causal

    model = models.load_model(tiny_causal(tmp_path / "m", heads=4), "causal")  # heads of 8 dimensions
    assert resolve_engine("auto", model, "fp32", "cpu", causal=True) == "transformers"
    with pytest.raises(EngineError, match="multiple of 16"):
        resolve_engine("onnxruntime", model, "fp32", "cpu", causal=True)


def test_auto_keeps_seq2seq_on_transformers(seq2seq_dir: Path) -> None:
    model = models.load_model(seq2seq_dir, "seq2seq")
    assert resolve_engine("auto", model, "fp32", "cpu", causal=False) == "transformers"
    with pytest.raises(EngineError, match=r"causal language models only.*serving\.engine: auto"):
        resolve_engine("onnxruntime", model, "fp32", "cpu", causal=False)
    with pytest.raises(EngineError, match=r"int4 needs the onnxruntime engine.*serving\.precision: auto"):
        resolve_engine("auto", model, "int4", "cpu", causal=False)


def test_quantized_weights_need_the_onnxruntime_engine(causal_dir: Path, tmp_path: Path) -> None:
    model = summarizer(causal_dir, tmp_path).model
    with pytest.raises(EngineError, match=r"serving\.engine: auto or onnxruntime"):
        resolve_engine("transformers", model, "int8", "cpu", causal=True)
    with pytest.raises(EngineError, match=r"fp32, int8, int4 on a CPU, not bf16"):
        resolve_engine("onnxruntime", model, "bf16", "cpu", causal=True)
