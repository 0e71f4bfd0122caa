"""steep.generation on a tiny causal model in fp32: one batch of requests, each with its own limits, against
plain argmax decoding; and Summarizer.prepare (LoRA merged, precision)."""

from __future__ import annotations

import pytest
import torch

from steep import generation, models
from steep.generation import Request, generate, resolve_precision
from tests.conftest_train import tiny_config

TEXTS = [
    "alpha bravo",
    "charlie delta echo foxtrot golf hotel",
    "india",
    "juliet kilo lima mike november oscar papa quebec romeo",
]


def liven(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Larger random weights: the default init repeats one word whatever the prompt, these answer each
    prompt with a different text (what batching could mix up)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0, 0.3)
    return model


def summarizer_of(model: torch.nn.Module, causal_dir, tmp_path) -> models.Summarizer:
    fmt = models.PromptFormat.from_config(tiny_config(tmp_path, causal_dir).model, "causal")
    return models.Summarizer(model, models.load_tokenizer(causal_dir, "causal"), fmt)


@pytest.fixture(scope="module")
def summarizer(causal_dir, tmp_path_factory) -> models.Summarizer:
    model = liven(models.load_model(causal_dir, "causal"))
    return summarizer_of(model, causal_dir, tmp_path_factory.mktemp("home"))


class EosAt:
    """The tokenizer with another end-of-sequence token, so a test can choose where a row ends."""

    def __init__(self, tokenizer, eos: int) -> None:
        self.tokenizer, self.eos_token_id = tokenizer, eos

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def greedy(model, prompt: list[int], limit: int, eos: int) -> tuple[list[int], str]:
    """The reference: argmax over the whole sequence, one token at a time; no cache, no padding, no batch."""
    ids, out = list(prompt), []
    with torch.inference_mode():
        for _ in range(limit):
            token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            if token == eos:
                return out, "stop"
            out.append(token)
            ids.append(token)
    return out, "length"


def greedy_text(summarizer, prompt: list[int], limit: int, eos: int | None = None) -> tuple[str, int, str]:
    tokens, finish = greedy(summarizer.model, prompt, limit, eos or summarizer.tokenizer.eos_token_id)
    return summarizer.tokenizer.decode(tokens, skip_special_tokens=True).strip(), len(tokens), finish


# --------------------------------------------------------------------------------------------- precision
def test_precision_auto_follows_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(generation, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(generation, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16" and resolve_precision("fp32", cpu) == "fp32"


# --------------------------------------------------------------------------------------------- one batch
def test_a_batch_answers_each_prompt_as_plain_greedy_decoding_does(summarizer):
    """Prompts of mixed lengths (one of a single token) prefilled apart and decoded from one left-padded
    cache: the same text as argmax decoding of each prompt alone, and as generating it alone."""
    requests = [summarizer.request(t, max_new_tokens=8) for t in TEXTS]
    requests.append(Request([summarizer.tokenizer.bos_token_id], max_new_tokens=8))
    batched = summarizer.generate(requests)
    alone = [summarizer.generate([r])[0] for r in requests]
    expected = [greedy_text(summarizer, r.prompt, 8) for r in requests]
    assert [(c.text, c.completion_tokens, c.finish_reason) for c in batched] == expected
    assert batched == alone
    assert len({c.text for c in batched}) == len(batched)  # the model answers each prompt differently
    assert [c.prompt_tokens for c in batched] == [len(r.prompt) for r in requests]
    assert summarizer.generate([]) == []


def test_each_row_stops_at_its_own_limit_or_at_eos(summarizer):
    prompts = [summarizer.request(t).prompt for t in TEXTS[:3]]
    reference, _ = greedy(summarizer.model, prompts[0], 8, eos=-1)
    step = next(i for i, tok in enumerate(reference) if i > 0 and tok not in reference[:i])
    tokenizer = EosAt(summarizer.tokenizer, reference[step])  # the first row ends with its token `step`
    limits = [8, 1, 5]
    done = generate(
        summarizer.model,
        tokenizer,
        [Request(p, max_new_tokens=n) for p, n in zip(prompts, limits, strict=True)],
    )
    assert (done[0].finish_reason, done[0].completion_tokens) == ("stop", step)
    assert done[0].text == summarizer.tokenizer.decode(reference[:step], skip_special_tokens=True).strip()
    for p, n, c in zip(prompts, limits, done, strict=True):
        tokens, finish = greedy(summarizer.model, p, n, eos=reference[step])
        assert (c.completion_tokens, c.finish_reason) == (len(tokens), finish)
        assert c.completion_tokens <= n and c.prompt_tokens == len(p)
    assert (done[1].finish_reason, done[1].completion_tokens) == ("length", 1)


def test_a_stop_string_cuts_the_text_and_ends_the_row(summarizer):
    text, _, _ = greedy_text(summarizer, summarizer.request(TEXTS[1]).prompt, 12)
    words = text.split()
    assert len(words) >= 5
    one, two = words[2], f"{words[1]} {words[2]}"  # a stop string may span two tokens
    requests = [
        summarizer.request(TEXTS[1], max_new_tokens=12, stop=("never-said", one)),
        summarizer.request(TEXTS[1], max_new_tokens=12, stop=(two,)),
        summarizer.request(TEXTS[0], max_new_tokens=12),
    ]
    cut_one, cut_two, other = summarizer.generate(requests)
    assert cut_one.text == text[: text.find(one)].strip() and cut_one.finish_reason == "stop"
    assert cut_two.text == text[: text.find(two)].strip() and cut_two.finish_reason == "stop"
    assert cut_one.completion_tokens < 12 and cut_two.completion_tokens < 12  # it stopped generating too
    assert other.text == greedy_text(summarizer, requests[2].prompt, 12)[0]  # the batch went on without it


def test_streamed_pieces_add_up_to_the_final_text(summarizer):
    """Streamed text is never taken back: no trailing space that the end trims, no part of a stop string."""
    text, _, _ = greedy_text(summarizer, summarizer.request(TEXTS[3]).prompt, 12)
    stop = " ".join(text.split()[3:5])
    pieces: list[list[str]] = [[], [], [], []]
    requests = [
        summarizer.request(TEXTS[3], max_new_tokens=12, on_text=pieces[0].append),
        summarizer.request(TEXTS[3], max_new_tokens=12, stop=(stop,), on_text=pieces[1].append),
        summarizer.request(TEXTS[0], max_new_tokens=3, on_text=pieces[2].append),
        summarizer.request(TEXTS[2], max_new_tokens=12, stop=("x" * 40,), on_text=pieces[3].append),
    ]
    done = summarizer.generate(requests)
    assert [c.text for c in done[:2]] == [text, text[: text.find(stop)].strip()]
    for streamed, completion in zip(pieces, done, strict=True):
        assert "".join(streamed) == completion.text
    assert len(pieces[0]) > 2  # streamed while decoding, not once at the end
    assert summarizer.generate([summarizer.request(TEXTS[3], max_new_tokens=12)])[0].text == text


def test_a_sampled_row_leaves_the_greedy_rows_of_its_batch_greedy(summarizer):
    expected = [greedy_text(summarizer, summarizer.request(t).prompt, 8)[0] for t in TEXTS[:2]]
    sampled = []
    for seed in range(3):
        torch.manual_seed(seed)
        greedy_row, hot, narrow = summarizer.generate(
            [
                summarizer.request(TEXTS[0], max_new_tokens=8),
                summarizer.request(TEXTS[0], max_new_tokens=8, temperature=2.0),
                summarizer.request(TEXTS[1], max_new_tokens=8, temperature=1.5, top_p=1e-6),
            ]
        )
        assert greedy_row.text == expected[0]
        assert narrow.text == expected[1]  # top_p that keeps only the likeliest token: greedy again
        assert hot.completion_tokens <= 8
        sampled.append(hot.text)
    assert any(s != expected[0] for s in sampled)  # temperature 2 on random weights does sample


# --------------------------------------------------------------------------------------------- prepare
def test_prepare_merges_a_lora_adapter_with_the_same_outputs(causal_dir, tmp_path):
    import peft

    base = liven(models.load_model(causal_dir, "causal"))
    config = peft.LoraConfig(
        task_type=peft.TaskType.CAUSAL_LM, r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    torch.manual_seed(2)
    summarizer = summarizer_of(peft.get_peft_model(base, config), causal_dir, tmp_path)
    ids = torch.tensor([summarizer.request(TEXTS[1]).prompt])
    with torch.inference_mode():
        adapted = summarizer.model(input_ids=ids).logits
        with summarizer.model.disable_adapter():
            plain = summarizer.model(input_ids=ids).logits
    assert not torch.allclose(adapted, plain, atol=1e-3)  # the adapter does change the model
    before = summarizer.summarize(TEXTS, max_new_tokens=6)
    assert summarizer.prepare("fp32") is summarizer
    assert not isinstance(summarizer.model, peft.PeftModel) and summarizer.precision == "fp32"
    assert not any("lora" in name for name, _ in summarizer.model.named_parameters())
    with torch.inference_mode():
        assert torch.allclose(summarizer.model(input_ids=ids).logits, adapted, atol=1e-5)
    assert summarizer.summarize(TEXTS, max_new_tokens=6) == before


def test_prepare_casts_to_the_precision_asked(causal_dir, tmp_path, monkeypatch):
    summarizer = summarizer_of(liven(models.load_model(causal_dir, "causal")), causal_dir, tmp_path)
    summarizer.prepare("bf16")
    assert summarizer.precision == "bf16"
    assert {p.dtype for p in summarizer.model.parameters()} == {torch.bfloat16}
    [done] = summarizer.generate([summarizer.request(TEXTS[0], max_new_tokens=3)])
    assert done.completion_tokens >= 1 or done.finish_reason == "stop"
    monkeypatch.setattr(generation, "cpu_has_native_bf16", lambda: False)
    summarizer.prepare("auto")  # no native bf16 here: back to fp32
    assert summarizer.precision == "fp32"
    assert {p.dtype for p in summarizer.model.parameters()} == {torch.float32}
