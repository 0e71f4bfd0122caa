"""Generation: one batch of requests through a loaded model, the one code path evaluation and serving share.

A batch mixes requests with their own limits (new tokens, temperature, top-p, stop strings) and lets each
stream its text while the batch decodes. Two things make a batch cheap on a CPU:

- each causal prompt is prefilled alone, without padding, and the batch decodes from one left-padded cache
  (padding a batch of mixed lengths wasted about a third of the prefill, measured on legal clauses);
- the served precision: bf16 where the hardware does it natively (`serving.precision: auto`), and LoRA
  weights merged into the base model (one matmul per layer instead of three).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "fp32", "bf16"]
FinishReason = Literal["stop", "length"]


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls several times faster than fp32 (else bf16 is emulated, and slower)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 where the hardware does it natively, else fp32; an explicit choice stays."""
    import torch

    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


@dataclass
class Request:
    """One prompt (token ids) and how to continue it; `on_text` receives the text as it is generated."""

    prompt: list[int]
    max_new_tokens: int = 48
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    on_text: Callable[[str], None] | None = None


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason


@dataclass
class _Row:
    """Where one request stands while its batch decodes."""

    request: Request
    tokens: list[int] = field(default_factory=list)
    sent: int = 0  # characters already streamed
    text: str = ""
    finish: FinishReason | None = None


def generate(
    model: Any, tokenizer: Any, requests: list[Request], *, left_padded: bool = True
) -> list[Completion]:
    """Generate for every request in one batch; completions come back in request order.

    `left_padded`: causal models continue from the right edge of the prompt; seq2seq encoders take right
    padding and start a fresh decoder.
    """
    import torch
    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

    if not requests:
        return []
    rows = [_Row(r) for r in requests]
    pad = tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    device = next(model.parameters()).device
    ids, mask = _padded([r.prompt for r in requests], pad, left_padded)
    width = ids.shape[1]
    sampling = any(r.temperature > 0 for r in requests)
    config = GenerationConfig(
        max_new_tokens=max(r.max_new_tokens for r in requests),
        do_sample=sampling,
        num_beams=1,
        temperature=1.0,  # per-row temperature and top-p are _RowSampling's; the model's defaults stay out
        top_p=1.0,
        top_k=0,  # else transformers' default top-k 50 would cut every sampled row
        pad_token_id=pad,
        eos_token_id=eos,
    )
    watch = _RowWatch(rows, tokenizer, eos)
    extra: dict[str, Any] = {}
    if left_padded:
        cache = _prefilled_cache(model, [r.prompt for r in requests], width)
        if cache is not None:
            extra["cache"] = cache
    with torch.inference_mode():
        model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            generation_config=config,
            logits_processor=LogitsProcessorList([_RowSampling(requests)] if sampling else []),
            stopping_criteria=StoppingCriteriaList([watch]),
            **extra,
        )
    watch.finish_all()
    return [
        Completion(row.text, len(row.request.prompt), len(row.tokens), row.finish or "length") for row in rows
    ]


def _padded(prompts: list[list[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        cols = slice(width - len(p), width) if left else slice(0, len(p))
        ids[row, cols], mask[row, cols] = torch.tensor(p, dtype=torch.long), 1
    return ids, mask


def _prefilled_cache(model: Any, prompts: list[list[int]], width: int) -> Any | None:
    """The KV cache of every prompt but its last token, each computed alone (no padding), left-padded into
    one batch cache; `generate` then runs only the last prompt token. None where the trick does not apply
    (not a plain transformers causal LM, e.g. a soft prompt in front; a single or one-token prompt)."""
    import torch
    from transformers import DynamicCache, PreTrainedModel

    if not isinstance(model, PreTrainedModel) or width < 2 or len(prompts) < 2:
        return None
    device = next(model.parameters()).device
    per_row = []
    with torch.inference_mode():
        for p in prompts:
            if len(p) < 2:
                per_row.append(None)
                continue
            cache = DynamicCache(config=model.config)
            model(input_ids=torch.tensor([p[:-1]], device=device), cache=cache, logits_to_keep=1)
            per_row.append(cache)
        shaped = next((c for c in per_row if c is not None), None)
        if shaped is None:
            return None
        batch = DynamicCache(config=model.config)
        for layer in range(len(shaped.layers)):
            keys, values = [], []
            for cache in per_row:
                ref = shaped.layers[layer]
                k = cache.layers[layer].keys if cache is not None else ref.keys[:, :, :0]
                v = cache.layers[layer].values if cache is not None else ref.values[:, :, :0]
                missing = (
                    width - 1 - k.shape[2]
                )  # left padding: every row's last token sits at column width-1
                keys.append(torch.nn.functional.pad(k, (0, 0, missing, 0)))
                values.append(torch.nn.functional.pad(v, (0, 0, missing, 0)))
            batch.update(torch.cat(keys), torch.cat(values), layer)
    return batch


class _RowSampling:
    """Per-row temperature and top-p in a sampled batch; a row with temperature 0 stays greedy (argmax)."""

    def __init__(self, requests: list[Request]) -> None:
        self.temperature = [r.temperature for r in requests]
        self.top_p = [r.top_p for r in requests]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        scores = scores.clone()
        for row, (t, p) in enumerate(zip(self.temperature, self.top_p, strict=True)):
            if t <= 0:
                keep = scores[row].argmax()
                scores[row] = float("-inf")
                scores[row, keep] = 0.0
                continue
            # the best logit shifted to 0, in float64: a tiny temperature (1e-150) tends to greedy, not to nan
            scores[row] = ((scores[row].double() - scores[row].max()) / t).to(scores.dtype)
            if p < 1.0:
                ordered, index = scores[row].sort(descending=True)
                cumulative = ordered.softmax(-1).cumsum(-1)
                drop = cumulative - ordered.softmax(-1) > p  # keep the smallest head whose mass reaches p
                scores[row, index[drop]] = float("-inf")
        return scores if scores.dtype == torch.float32 else scores.float()


class _RowWatch:
    """Called after every decoding step: records each row's tokens, stops a row at its own limit, EOS or
    stop string, and streams new text to the rows that asked for it."""

    def __init__(self, rows: list[_Row], tokenizer: Any, eos: int | list[int] | None) -> None:
        self.rows = rows
        self.tokenizer = tokenizer
        self.eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        self.needs_text = [bool(r.request.on_text or r.request.stop) for r in rows]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        import torch

        newest = input_ids[:, -1].tolist()
        done = []
        for i, row in enumerate(self.rows):
            if row.finish is None:
                token = newest[i]
                if token in self.eos:
                    row.finish = "stop"
                else:
                    row.tokens.append(token)
                    if self.needs_text[i]:
                        self._text(row)
                    if row.finish is None and len(row.tokens) >= row.request.max_new_tokens:
                        row.finish = "length"
                if row.finish is not None:
                    self._close(row)
            done.append(row.finish is not None)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _text(self, row: _Row) -> None:
        """Decode the row so far; cut at a stop string; stream what can no longer change."""
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True).lstrip()
        for stop in row.request.stop:
            at = text.find(stop)
            if at >= 0:
                text, row.finish = text[:at], "stop"
        row.text = text
        if row.request.on_text is None or row.finish is not None:
            return
        hold = max((len(s) for s in row.request.stop), default=1) - 1  # a stop string may be starting
        safe = len(text.rstrip()) - hold  # trailing space may be trimmed at the end: not sent yet
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            safe = min(safe, len(text) - 1)
        if safe > row.sent:
            row.request.on_text(text[row.sent : safe])
            row.sent = safe

    def _close(self, row: _Row) -> None:
        """A finished row: its final text (trimmed, as summaries are); the part not yet streamed is sent."""
        if not row.request.stop:
            row.text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        row.text = row.text.strip()
        if row.request.on_text is not None and len(row.text) > row.sent:
            row.request.on_text(row.text[row.sent :])
            row.sent = len(row.text)

    def finish_all(self) -> None:
        """Rows still open when generate returned ran out of new tokens (the batch's own limit)."""
        for row, needs_text in zip(self.rows, self.needs_text, strict=True):
            if row.finish is None:
                if needs_text:
                    self._text(row)
                row.finish = row.finish or "length"
                self._close(row)
