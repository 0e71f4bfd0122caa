"""steep.generation on tiny models in fp32, against plain argmax decoding: requests with their own limits;
the Decoder's iteration-level batching (rows join while others decode, leave when finished, the cache
trimmed behind them); static batches for seq2seq and soft-prompt models; and Summarizer.prepare (LoRA
merged, precision)."""

from __future__ import annotations

import pytest
import torch

from steep import hardware, models
from steep.generation import Decoder, Request, StaticBatch, generate
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


def penalized_greedy(model, prompt: list[int], limit: int, eos: int, penalty: float) -> list[int]:
    """The reference with a repetition penalty on the tokens generated so far (not the prompt's)."""
    ids, out = list(prompt), []
    with torch.inference_mode():
        for _ in range(limit):
            logits = model(torch.tensor([ids])).logits[0, -1].clone()
            for seen in set(out):
                logits[seen] = logits[seen] / penalty if logits[seen] > 0 else logits[seen] * penalty
            token = int(logits.argmax())
            if token == eos:
                break
            out.append(token)
            ids.append(token)
    return out


def test_a_repetition_penalty_applies_to_generated_tokens_alone_in_both_batch_kinds(summarizer):
    tok = summarizer.tokenizer
    requests = [summarizer.request(t, max_new_tokens=12, repetition_penalty=1.8) for t in TEXTS]
    reference = [penalized_greedy(summarizer.model, r.prompt, 12, tok.eos_token_id, 1.8) for r in requests]
    expected = [tok.decode(ids, skip_special_tokens=True).strip() for ids in reference]
    assert [c.text for c in summarizer.generate(requests)] == expected  # iteration-level Decoder
    static = StaticBatch(summarizer.model, tok, left_padded=True)
    for i, r in enumerate(requests):
        static.add(i, r)
    assert [
        c.text for _, c in sorted(static.step(), key=lambda kc: kc[0])
    ] == expected  # transformers' generate
    plain = [summarizer.request(t, max_new_tokens=12) for t in TEXTS]
    assert [c.text for c in summarizer.generate(plain)] != expected  # it changes what greedy picks


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


# ---------------------------------------------------------------------------------------- iteration-level
def check_cache(decoder: Decoder) -> None:
    """The Decoder's invariants: one cache row and one mask row per decoding row, as wide as each other, and
    no leading column that no row attends to (the padding of rows that left is trimmed)."""
    if not decoder.rows:
        assert decoder.cache is None and decoder.mask is None
        return
    width = decoder.mask.shape[1]
    assert decoder.mask.shape[0] == len(decoder.rows) == len(decoder.keys) == len(decoder.next_ids)
    assert bool(decoder.mask[:, 0].any()), decoder.mask
    for layer in decoder.cache.layers:
        assert layer.keys.shape[0] == layer.values.shape[0] == len(decoder.rows)
        assert layer.keys.shape[-2] == layer.values.shape[-2] == width


def test_rows_admitted_while_others_decode_answer_as_they_would_alone(summarizer):
    """Rows join a running batch with longer prompts (the batch is padded further on the left) and shorter
    ones (the new row is padded), leave at their own limits; each says what argmax decoding says alone."""
    requests = [
        summarizer.request(TEXTS[0], max_new_tokens=10),
        summarizer.request(TEXTS[1], max_new_tokens=6),  # longer than the running row
        summarizer.request(TEXTS[2], max_new_tokens=9),  # shorter than every row
        summarizer.request(TEXTS[3], max_new_tokens=5),  # the longest
        Request([summarizer.tokenizer.bos_token_id], max_new_tokens=7),  # one token
    ]
    admitted_at = {0: [0], 2: [1], 3: [2, 3], 5: [4]}  # step -> the requests added before it
    decoder = summarizer.open_batch()
    assert isinstance(decoder, Decoder)
    done: dict = {}
    step = 0
    while len(done) < len(requests):
        for key in admitted_at.get(step, []):
            if key:
                assert decoder.rows, "a row should still be decoding when the next one joins"
            decoder.add(key, requests[key])
            check_cache(decoder)
        done.update(decoder.step())
        check_cache(decoder)
        step += 1
    assert decoder.size == 0
    expected = [greedy_text(summarizer, r.prompt, r.max_new_tokens) for r in requests]
    assert [(done[i].text, done[i].completion_tokens, done[i].finish_reason) for i in range(5)] == expected
    assert [done[i].prompt_tokens for i in range(5)] == [len(r.prompt) for r in requests]


def test_a_finished_row_leaves_and_the_columns_that_only_padded_it_go(summarizer):
    long = summarizer.request(TEXTS[3], max_new_tokens=2)
    short = summarizer.request(TEXTS[2], max_new_tokens=8)
    pad = len(long.prompt) - len(short.prompt)
    decoder = summarizer.open_batch()
    decoder.add("long", long)
    decoder.add("short", short)
    assert decoder.size == 2 and decoder.mask.shape == (2, len(long.prompt))
    assert decoder.mask[1, :pad].sum() == 0 and bool(decoder.mask[1, pad:].all())  # short: left-padded
    finished = decoder.step()
    assert [key for key, _ in finished] == ["long"] and decoder.size == 1
    assert decoder.mask.shape == (1, len(short.prompt) + 1) and bool(decoder.mask.all())
    check_cache(decoder)
    rest: dict = {}
    while decoder.size:
        rest.update(decoder.step())
    assert decoder.cache is None and decoder.mask is None
    [(_, left)] = finished
    assert (left.text, left.completion_tokens, left.finish_reason) == greedy_text(summarizer, long.prompt, 2)
    assert rest["short"].text == greedy_text(summarizer, short.prompt, 8)[0]


def test_a_row_its_first_token_finishes_is_answered_at_the_next_step_without_joining(summarizer):
    """max_new_tokens=1, or an end-of-sequence token first: prefilled, answered, never in the cache."""

    def first_token(text: str) -> int:
        return greedy(summarizer.model, summarizer.request(text).prompt, 1, eos=-1)[0][0]

    first = first_token(TEXTS[3])
    tokenizer = EosAt(summarizer.tokenizer, first)  # TEXTS[3] ends at once
    running_text, one_text = [t for t in TEXTS[:3] if first_token(t) != first][:2]
    decoder = Decoder(summarizer.model, tokenizer)
    running = summarizer.request(running_text, max_new_tokens=4)
    decoder.add("running", running)
    mask = decoder.mask.clone()
    decoder.add("one token", summarizer.request(one_text, max_new_tokens=1))
    decoder.add("eos first", summarizer.request(TEXTS[3], max_new_tokens=8))
    assert decoder.size == 3 and decoder.keys == ["running"] and torch.equal(decoder.mask, mask)
    done = dict(decoder.step())
    assert {"one token", "eos first"} <= set(done)
    one, eos = done["one token"], done["eos first"]
    assert (one.completion_tokens, one.finish_reason) == (1, "length")
    assert one.text == greedy_text(summarizer, summarizer.request(one_text).prompt, 1)[0]
    assert (eos.text, eos.completion_tokens, eos.finish_reason) == ("", 0, "stop")
    while decoder.size:
        done.update(decoder.step())
    tokens, finish = greedy(summarizer.model, running.prompt, 4, eos=first)
    assert (done["running"].completion_tokens, done["running"].finish_reason) == (len(tokens), finish)

    alone = Decoder(summarizer.model, summarizer.tokenizer)  # on an empty batch too
    alone.add("k", summarizer.request(TEXTS[0], max_new_tokens=1))
    assert alone.size == 1 and alone.cache is None
    assert [key for key, _ in alone.step()] == ["k"] and alone.size == 0 and alone.step() == []


def test_generate_keeps_at_most_max_rows_decoding_and_answers_as_alone(summarizer, monkeypatch):
    rows_per_step: list[int] = []
    real = summarizer.open_batch

    def spied():
        batch = real()
        step = batch.step

        def counted():
            rows_per_step.append(batch.size)
            return step()

        batch.step = counted
        return batch

    monkeypatch.setattr(summarizer, "open_batch", spied)
    requests = [
        summarizer.request(text, max_new_tokens=n)
        for text, n in zip([*TEXTS, "kilo lima"], [8, 2, 6, 3, 5], strict=True)
    ]
    together = summarizer.generate(requests, max_rows=2)
    assert max(rows_per_step) == 2 and len(rows_per_step) < sum(r.max_new_tokens for r in requests)
    monkeypatch.undo()
    assert together == [summarizer.generate([r])[0] for r in requests]
    assert summarizer.summarize(TEXTS, max_new_tokens=6, batch_size=3) == [
        greedy_text(summarizer, summarizer.request(t).prompt, 6)[0] for t in TEXTS
    ]


# --------------------------------------------------------------------------------------------- static
@pytest.fixture(scope="module")
def seq2seq(seq2seq_dir, tmp_path_factory) -> models.Summarizer:
    fmt = models.PromptFormat.from_config(
        tiny_config(tmp_path_factory.mktemp("home"), seq2seq_dir).model, "seq2seq"
    )
    model = liven(models.load_model(seq2seq_dir, "seq2seq"))
    return models.Summarizer(model, models.load_tokenizer(seq2seq_dir, "seq2seq"), fmt)


def test_a_seq2seq_model_runs_static_batches_with_per_row_limits(seq2seq):
    requests = [seq2seq.request(t, max_new_tokens=n) for t, n in zip(TEXTS, [6, 2, 5, 4], strict=True)]
    batch = seq2seq.open_batch()
    assert isinstance(batch, StaticBatch) and not batch.left_padded
    for i, request in enumerate(requests):
        batch.add(i, request)
    assert batch.size == 4
    done = batch.step()
    assert batch.size == 0 and batch.step() == []
    assert [key for key, _ in done] == [0, 1, 2, 3]
    alone = [seq2seq.generate([r])[0] for r in requests]
    assert [c for _, c in done] == alone == seq2seq.generate(requests, max_rows=3)
    for request, completion in zip(requests, alone, strict=True):
        assert completion.completion_tokens <= request.max_new_tokens
        assert completion.prompt_tokens == len(request.prompt)
    assert any(c.completion_tokens == r.max_new_tokens for c, r in zip(alone, requests, strict=True))


def test_a_soft_prompt_model_runs_static_batches_that_answer_as_alone(causal_dir, tmp_path):
    """peft ignores position ids under a soft prompt, so left padding would shift the padded rows: each
    row still answers what it answers alone."""
    import peft

    base = liven(models.load_model(causal_dir, "causal"))
    torch.manual_seed(4)
    tuned = peft.get_peft_model(
        base, peft.PromptTuningConfig(task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=3)
    )
    summarizer = summarizer_of(tuned, causal_dir, tmp_path)
    batch = summarizer.open_batch()
    assert isinstance(batch, StaticBatch) and batch.left_padded
    texts = [*TEXTS, "kilo lima"]  # two prompts of one length: those still share a batch
    requests = [summarizer.request(t, max_new_tokens=n) for t, n in zip(texts, [6, 2, 5, 4, 3], strict=True)]
    together = summarizer.generate(requests)
    assert together == [summarizer.generate([r])[0] for r in requests]
    assert all(c.completion_tokens <= r.max_new_tokens for c, r in zip(together, requests, strict=True))


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
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    summarizer.prepare("auto")  # no native bf16 here: back to fp32
    assert summarizer.precision == "fp32"
    assert {p.dtype for p in summarizer.model.parameters()} == {torch.float32}
