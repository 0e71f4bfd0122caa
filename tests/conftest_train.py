"""Tiny random-init models and a word-level tokenizer built offline, for fast training tests.

Import with ``sys.path`` pointing at tests/ (see the test modules); nothing here downloads anything.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

from steep.config import SteepConfig
from steep.data import Splits, split_dataset

REPO = Path(__file__).resolve().parents[1]
LEGAL = REPO / ".." / "shared" / "datasets" / "legal_summarization" / "legal_summarization.jsonl"
WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
]  # fmt: skip
INSTRUCTION = "summarize the clause ."
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)


def legal_overrides() -> list[str]:
    """--set overrides that point the data section at the shared legal set."""
    return [
        f"data.source={LEGAL.resolve()}",
        "data.id_column=id",
        "data.text_column=source_text",
        "data.summary_column=summary",
        "data.group_column=doc",
        "data.sha256=null",
    ]


def build_tokenizer(folder: Path, chat: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {
        tok: i
        for i, tok in enumerate(
            [*SPECIALS, *WORDS, "summarize", "the", "clause", ".", "summary", ":", "user", "assistant"]
        )
    }
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)
    return tok


def tiny_causal(folder: Path, chat: bool = True, heads: int = 4) -> Path:
    """A 2-layer Llama with hidden size 32 (random init) + the word tokenizer, saved as a model folder;
    `heads=2` gives heads of 16 dimensions, the least ONNX Runtime's attention kernel takes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = build_tokenizer(folder, chat)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=heads // 2, max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def tiny_seq2seq(folder: Path) -> Path:
    """A 2-layer T5 with d_model 32 (random init) + the word tokenizer."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    tok = build_tokenizer(folder, chat=False)
    config = T5Config(
        vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
    )  # fmt: skip
    T5ForConditionalGeneration(config).save_pretrained(folder)
    return folder


def toy_frame(rows: int = 64, seed: int = 0) -> pd.DataFrame:
    """A learnable task: the summary is the first three words of the text."""
    rng = random.Random(seed)
    records = []
    for i in range(rows):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 14))]
        records.append(
            {
                "id": f"r{i:03d}",
                "group": f"g{i // 2}",
                "text": " ".join(words),
                "summary": " ".join(words[:3]),
            }
        )
    return pd.DataFrame(records)


def toy_splits(cfg: SteepConfig, rows: int = 64) -> Splits:
    return split_dataset(toy_frame(rows), cfg.data.split, cfg.project.seed)


def tiny_config(home: Path, model_dir: Path, **training) -> SteepConfig:
    """A config for the tiny model: short truncation, a high learning rate, in-process by default."""
    data = {
        "project": {"home": str(home)},
        "model": {
            "source": str(model_dir),
            "max_source_tokens": 24,
            "max_target_tokens": 6,
            "instruction": INSTRUCTION,
        },
        "training": {
            "workers": 0,
            "batch_size": 8,
            "learning_rate": 3e-3,
            "epochs": 2,
            "warmup_ratio": 0.0,
            **training,
        },
    }
    return SteepConfig.model_validate(data)
