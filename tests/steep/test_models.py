"""steep.models on tiny random-init models: resolving sources, prompts and labels, adapters, generation."""

from __future__ import annotations

from pathlib import Path

import pytest

from steep import models
from steep.config import SteepConfig, TrainingConfig
from steep.generation import Decoder, StaticBatch
from tests.conftest_train import tiny_config


def _cfg(source: str, home: Path) -> SteepConfig:
    return SteepConfig.model_validate({"project": {"home": str(home)}, "model": {"source": source}})


def test_resolve_local_folder(causal_dir, tmp_path):
    assert models.resolve_model(_cfg(str(causal_dir), tmp_path)) == causal_dir


def test_missing_model_lists_offline_options(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for source in (str(tmp_path / "nope"), "nobody/no-such-model-xyz"):
        with pytest.raises(models.ModelError) as err:
            models.resolve_model(_cfg(source, tmp_path))
        assert "smollm2-135m-instruct" in str(err.value) and "Offline options" in str(err.value)


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.ModelError, match=r"config\.json"):
        models.resolve_model(_cfg(str(tmp_path / "empty"), tmp_path))


def test_kind_from_model_config(causal_dir, seq2seq_dir):
    assert models.model_kind(causal_dir) == "causal"
    assert models.model_kind(seq2seq_dir) == "seq2seq"
    assert models.model_kind(seq2seq_dir, "causal") == "causal"  # model.kind wins over auto-detection


def test_causal_example_uses_chat_template_and_labels_only_the_summary(causal_dir, tmp_path):
    cfg = tiny_config(tmp_path, causal_dir)
    tok = models.load_tokenizer(causal_dir, "causal")
    enc = models.Encoder(tok, models.PromptFormat.from_config(cfg.model, "causal"))
    text = " ".join(["alpha"] * 100)  # longer than max_source_tokens
    ex = enc.example(text, "bravo charlie " * 10)
    tokens = tok.convert_ids_to_tokens(ex["input_ids"])
    assert tokens[0] == "<|im_start|>" and tokens.count("alpha") == cfg.model.max_source_tokens
    target = [i for i in ex["labels"] if i != models.IGNORE_INDEX]
    assert len(target) == cfg.model.max_target_tokens and target[-1] == tok.eos_token_id
    assert ex["input_ids"][-len(target) :] == target  # labels sit on the summary tokens only
    assert len(ex["labels"]) == len(ex["input_ids"])


def test_seq2seq_example_has_task_prefix(seq2seq_dir, tmp_path):
    cfg = tiny_config(tmp_path, seq2seq_dir)
    tok = models.load_tokenizer(seq2seq_dir, "seq2seq")
    fmt = models.PromptFormat.from_config(
        cfg.model.model_copy(update={"task_prefix": "summary : "}), "seq2seq"
    )
    ex = models.Encoder(tok, fmt).example("alpha bravo", "alpha")
    assert tok.convert_ids_to_tokens(ex["input_ids"])[:4] == ["summary", ":", "alpha", "bravo"]
    assert ex["labels"] == [tok.convert_tokens_to_ids("alpha"), tok.eos_token_id]


def test_unknown_lora_target_lists_the_real_ones(causal_dir):
    model = models.load_model(causal_dir, "causal")
    training = TrainingConfig.model_validate({"lora": {"target_modules": ["q_proj", "query"]}})
    with pytest.raises(models.ModelError) as err:
        models.apply_method(model, training, "causal")
    assert "query" in str(err.value) and "v_proj" in str(err.value) and "lm_head" not in str(err.value)


@pytest.mark.parametrize("method", ["lora", "prompt_tuning", "full"])
def test_methods_train_the_right_parameters(causal_dir, method):
    model = models.load_model(causal_dir, "causal")
    total = sum(p.numel() for p in model.parameters())
    wrapped = models.apply_method(model, TrainingConfig(method=method), "causal")
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    if method == "full":
        assert trainable == total
    else:
        assert 0 < trainable < total


def test_lora_layers_adapts_only_the_last_blocks_and_backward_stops_there(causal_dir):
    import torch

    model = models.load_model(causal_dir, "causal")
    count = model.config.num_hidden_layers
    training = TrainingConfig.model_validate({"lora": {"layers": 1}})
    wrapped = models.apply_method(model, training, "causal")
    adapted = {n.split(".layers.")[1].split(".")[0] for n, p in wrapped.named_parameters() if p.requires_grad}
    assert adapted == {str(count - 1)}
    ids = torch.tensor([[1, 2, 3, 4]])
    wrapped(input_ids=ids, labels=ids).loss.backward()
    first = wrapped.get_base_model().model.layers[0]
    hidden = []
    first.register_forward_hook(lambda _m, _i, out: hidden.append(out[0] if isinstance(out, tuple) else out))
    wrapped(input_ids=ids)
    assert not hidden[0].requires_grad  # nothing below the adapted blocks is in the backward graph


def test_lora_layers_beyond_the_model_or_on_seq2seq_is_explained(causal_dir, seq2seq_dir):
    model = models.load_model(causal_dir, "causal")
    count = model.config.num_hidden_layers
    too_many = TrainingConfig.model_validate({"lora": {"layers": count + 1}})
    with pytest.raises(models.ModelError, match=f"has {count} transformer blocks"):
        models.apply_method(model, too_many, "causal")
    every = TrainingConfig.model_validate({"lora": {"layers": count}})
    assert models.last_blocks(model, every.lora.layers, "causal") is None  # all of them: peft's default
    seq2seq = models.load_model(seq2seq_dir, "seq2seq")
    with pytest.raises(models.ModelError, match="decoder-only"):
        models.apply_method(seq2seq, TrainingConfig.model_validate({"lora": {"layers": 1}}), "seq2seq")


@pytest.mark.parametrize("which", ["causal", "seq2seq"])
def test_summarize_keeps_order_and_bounds_length(which, causal_dir, seq2seq_dir, tmp_path):
    folder = causal_dir if which == "causal" else seq2seq_dir
    cfg = tiny_config(tmp_path, folder)
    fmt = models.PromptFormat.from_config(cfg.model, which)
    fmt.save(tmp_path)
    summarizer = models.load_for_inference(folder, fmt=models.PromptFormat.load(tmp_path))
    assert summarizer.causal == (which == "causal")
    # a causal LM decodes with iteration-level batching, a seq2seq model in static batches
    assert isinstance(summarizer.open_batch(), Decoder if which == "causal" else StaticBatch)
    texts = ["alpha bravo", "charlie delta echo foxtrot golf hotel", "india"]
    batched = summarizer.summarize(texts, max_new_tokens=4, batch_size=2)
    single = [summarizer.summarize([t], max_new_tokens=4, batch_size=1)[0] for t in texts]
    assert batched == single  # sharing a batch (and its padding) does not change greedy outputs
    assert all(len(s.split()) <= 4 for s in batched)
