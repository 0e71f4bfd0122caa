"""Generation: requests through a loaded model, the one code path evaluation and serving share.

Requests carry their own limits (new tokens, temperature, top-p, stop strings) and may stream their text. A
causal language model runs them with iteration-level batching (`Decoder`): a request is prefilled alone,
without padding, then joins the rows decoding together in one left-padded KV cache; a finished row leaves at
once and a waiting request takes its place at the next step. On a 2-core CPU a decoding step costs about
40 ms plus 6 ms per row (SmolLM2-135M, bf16), so rows that finished early and padding are what static batches
waste. Other models (seq2seq, a soft prompt in front) run static batches through transformers' `generate`.

The served precision matters as much: bf16 where the hardware does it natively (`serving.precision: auto`),
and LoRA weights merged into the base model (`Summarizer.prepare`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "fp32", "bf16"]
FinishReason = Literal["stop", "length"]


@dataclass
class Request:
    """One prompt (token ids) and how to continue it; `on_text` receives the text as it is generated."""

    prompt: list[int]
    max_new_tokens: int = 48
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    repetition_penalty: float = 1.0  # > 1: tokens this row generated already get less likely (not the prompt)
    on_text: Callable[[str], None] | None = None


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason


class Batch(Protocol):
    """Rows generating together: `add` admits a request under a key, `step` advances every row and returns
    the (key, completion) pairs that finished; `size` counts the rows admitted and not yet returned."""

    size: int

    def add(self, key: Hashable, request: Request) -> None: ...

    def step(self) -> list[tuple[Hashable, Completion]]: ...


def open_batch(model: Any, tokenizer: Any, causal: bool = True) -> Batch:
    """A Decoder for a plain transformers causal LM, else a StaticBatch over transformers' `generate`."""
    from transformers import PreTrainedModel

    if causal and isinstance(model, PreTrainedModel) and Decoder.fits(model):
        return Decoder(model, tokenizer)
    return StaticBatch(model, tokenizer, left_padded=causal)


def generate(
    model: Any, tokenizer: Any, requests: Iterable[Request], *, max_rows: int = 16, causal: bool = True
) -> list[Completion]:
    """Every request, at most `max_rows` generating at a time; completions in request order."""
    return run_batch(open_batch(model, tokenizer, causal), requests, max_rows=max_rows)


def run_batch(batch: Batch, requests: Iterable[Request], *, max_rows: int = 16) -> list[Completion]:
    """Every request through one Batch of any engine, at most `max_rows` rows at a time; in request order."""
    pending = deque(enumerate(requests))
    done: dict[Hashable, Completion] = {}
    total = len(pending)
    while len(done) < total:
        while pending and batch.size < max_rows:
            batch.add(*pending.popleft())
        done.update(batch.step())
    return [done[i] for i in range(total)]


class Decoder:
    """Iteration-level batching for a causal LM: rows join after their own prefill, leave when finished.

    The rows share one DynamicCache, left-padded to the longest row, with a 2D attention mask and explicit
    position ids per row, so a row decodes as it would alone.
    """

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos = eos_ids(tokenizer)
        self.device = next(model.parameters()).device
        self.keys: list[Hashable] = []
        self.rows: list[RowState] = []
        self.cache: Any = None  # transformers DynamicCache over self.rows
        self.mask: torch.Tensor | None = None  # [rows, cache length], 0 on left padding
        self.next_ids: list[int] = []  # the token each row feeds next
        self.positions: list[int] = []  # its position
        self.finished: list[tuple[Hashable, Completion]] = []

    @staticmethod
    def fits(model: Any) -> bool:
        """Only caches of plain per-layer key/value tensors can be padded and joined row by row."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache(config=model.config)
        return (
            all(type(layer) is DynamicLayer for layer in cache.layers) and not model.config.is_encoder_decoder
        )

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.finished)

    def add(self, key: Hashable, request: Request) -> None:
        """Prefill the prompt alone, pick its first token; the row joins the batch unless that finished it."""
        import torch
        from transformers import DynamicCache

        row = RowState(request)
        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            logits = self.model(
                input_ids=torch.tensor([request.prompt], device=self.device), cache=cache, logits_to_keep=1
            ).logits[:, -1]
        [token] = choose_tokens(logits, [row])
        if row.push(token, self.tokenizer, self.eos):
            self.finished.append((key, row.completion()))
            return
        self._join(cache, len(request.prompt))
        self.keys.append(key)
        self.rows.append(row)
        self.next_ids.append(token)
        self.positions.append(len(request.prompt))

    def step(self) -> list[tuple[Hashable, Completion]]:
        """One token for every row; the rows that finished (here, or when they were added) leave."""
        import torch

        finished, self.finished = self.finished, []
        if not self.rows:
            return finished
        assert self.mask is not None
        ones = torch.ones((len(self.rows), 1), dtype=self.mask.dtype, device=self.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        with torch.inference_mode():
            logits = self.model(
                input_ids=torch.tensor(self.next_ids, device=self.device)[:, None],
                attention_mask=self.mask,
                position_ids=torch.tensor(self.positions, device=self.device)[:, None],
                cache=self.cache,
                logits_to_keep=1,
            ).logits[:, -1]
        keep = []
        for i, (row, token) in enumerate(zip(self.rows, choose_tokens(logits, self.rows), strict=True)):
            if row.push(token, self.tokenizer, self.eos):
                finished.append((self.keys[i], row.completion()))
            else:
                keep.append(i)
                self.next_ids[i] = token
                self.positions[i] += 1
        if len(keep) < len(self.rows):
            self._leave(keep)
        return finished

    def _join(self, cache: Any, length: int) -> None:
        """Add one prefilled row: left-pad it, or the batch, to the longer cache length; stack it below."""
        import torch
        import torch.nn.functional as F

        row_mask = torch.ones((1, length), dtype=torch.long, device=self.device)
        if self.cache is None or not self.rows:
            self.cache, self.mask = cache, row_mask
            return
        assert self.mask is not None
        width = self.mask.shape[1]
        grow, pad = max(0, length - width), max(0, width - length)
        for mine, new in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([F.pad(mine.keys, (0, 0, grow, 0)), F.pad(new.keys, (0, 0, pad, 0))])
            mine.values = torch.cat([F.pad(mine.values, (0, 0, grow, 0)), F.pad(new.values, (0, 0, pad, 0))])
        self.mask = torch.cat([F.pad(self.mask, (grow, 0)), F.pad(row_mask, (pad, 0))])

    def _leave(self, keep: list[int]) -> None:
        """Drop finished rows, then the left columns that only padded them."""
        import torch

        index = torch.tensor(keep, device=self.device)
        self.keys = [self.keys[i] for i in keep]
        self.rows = [self.rows[i] for i in keep]
        self.next_ids = [self.next_ids[i] for i in keep]
        self.positions = [self.positions[i] for i in keep]
        if not keep:
            self.cache, self.mask = None, None
            return
        assert self.mask is not None
        mask = self.mask.index_select(0, index)
        start = int(mask.any(0).int().argmax())  # the first column some remaining row attends to
        self.mask = mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:]
            layer.values = layer.values.index_select(0, index)[:, :, start:]


class StaticBatch:
    """Rows generated together by transformers' `generate` (seq2seq models, soft prompts): all at once, at
    the first `step` after they were added."""

    def __init__(self, model: Any, tokenizer: Any, left_padded: bool) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.left_padded = left_padded
        self.waiting: list[tuple[Hashable, Request]] = []

    @property
    def size(self) -> int:
        return len(self.waiting)

    def add(self, key: Hashable, request: Request) -> None:
        self.waiting.append((key, request))

    def step(self) -> list[tuple[Hashable, Completion]]:
        waiting, self.waiting = self.waiting, []
        if self.left_padded and _soft_prompted(self.model):
            # peft drops the position ids of a soft-prompted model: left padding would shift a padded row's
            # positions and change its text, so only prompts of one length generate together
            groups: dict[int, list[tuple[Hashable, Request]]] = {}
            for key, request in waiting:
                groups.setdefault(len(request.prompt), []).append((key, request))
            return [done for group in groups.values() for done in self._generate(group)]
        return self._generate(waiting)

    def _generate(self, waiting: list[tuple[Hashable, Request]]) -> list[tuple[Hashable, Completion]]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        if not waiting:
            return []
        rows = [RowState(r) for _, r in waiting]
        eos = eos_ids(self.tokenizer)
        ids, mask = _padded([r.prompt for _, r in waiting], self.tokenizer.pad_token_id, self.left_padded)
        sampling = any(row.request.temperature > 0 for row in rows)
        penalties = any(row.request.repetition_penalty != 1.0 for row in rows)
        # per-row temperature and top-p are _RowSampling's: the model's own sampling defaults stay out
        sample = {"temperature": 1.0, "top_p": 1.0, "top_k": 0} if sampling else {}
        config = GenerationConfig(
            max_new_tokens=max(row.request.max_new_tokens for row in rows),
            do_sample=sampling,
            num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(eos) or None,
            **sample,
        )
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            self.model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                generation_config=config,
                logits_processor=LogitsProcessorList(
                    ([_RowPenalty(rows)] if penalties else []) + ([_RowSampling(rows)] if sampling else [])
                ),
                stopping_criteria=StoppingCriteriaList([_RowWatch(rows, self.tokenizer, eos)]),
            )
        for row in rows:
            if row.finish is None:  # generate's own limit: the longest row's max_new_tokens
                row.finish = "length"
                row.close(self.tokenizer)
        return [(key, row.completion()) for (key, _), row in zip(waiting, rows, strict=True)]


def _soft_prompted(model: Any) -> bool:
    """A peft prompt-tuning (or p-tuning) model: virtual tokens in front, position ids ignored."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False)) and config.peft_type != "PREFIX_TUNING"


def eos_ids(tokenizer: Any) -> set[int]:
    eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [] if eos is None else [eos])


def _padded(prompts: list[list[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        cols = slice(width - len(p), width) if left else slice(0, len(p))
        ids[row, cols], mask[row, cols] = torch.tensor(p, dtype=torch.long), 1
    return ids, mask


def _adjusted(scores: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """One row's logits for sampling: greedy (only the argmax left) at temperature 0, else scaled and cut
    to the smallest head of probability mass top_p."""
    import torch

    if temperature <= 0:
        out = torch.full_like(scores, float("-inf"))
        out[scores.argmax()] = 0.0
        return out
    # the best logit shifted to 0, in float64: a tiny temperature (1e-150) tends to greedy, not to nan
    out = ((scores.double() - scores.max()) / temperature).to(scores.dtype)
    if top_p < 1.0:
        ordered, index = out.sort(descending=True)
        probs = ordered.softmax(-1)
        out[index[probs.cumsum(-1) - probs > top_p]] = float("-inf")
    return out


def choose_tokens(logits: torch.Tensor, rows: list[RowState]) -> list[int]:
    """The next token of each row: argmax for greedy rows, a sample under its own settings for the rest."""
    import torch

    if any(row.request.repetition_penalty != 1.0 and row.tokens for row in rows):
        logits = _penalized(logits, rows)
    tokens = logits.argmax(-1).tolist()
    for i, row in enumerate(rows):
        r = row.request
        if r.temperature > 0:
            probs = _adjusted(logits[i].float(), r.temperature, r.top_p).softmax(-1)
            tokens[i] = int(torch.multinomial(probs, 1))
    return tokens


def _penalized(logits: torch.Tensor, rows: list[RowState]) -> torch.Tensor:
    """Each row's logits with its repetition penalty on the tokens it generated so far (CTRL's rule:
    positive logits divided, negative ones multiplied). The prompt is not penalized: a summary may copy it."""
    import torch

    logits = logits.clone()
    for i, row in enumerate(rows):
        penalty = row.request.repetition_penalty
        if penalty == 1.0 or not row.tokens:
            continue
        seen = torch.tensor(sorted(set(row.tokens)), device=logits.device)
        picked = logits[i, seen]
        logits[i, seen] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits


class _RowPenalty:
    """transformers logits processor: per-row repetition penalty in a StaticBatch (see `_penalized`)."""

    def __init__(self, rows: list[RowState]) -> None:
        self.rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return _penalized(scores, self.rows)


class _RowSampling:
    """transformers logits processor: per-row temperature and top-p in a sampled StaticBatch."""

    def __init__(self, rows: list[RowState]) -> None:
        self.rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        scores = scores.float()
        return torch.stack(
            [
                _adjusted(scores[i], row.request.temperature, row.request.top_p)
                for i, row in enumerate(self.rows)
            ]
        )


class _RowWatch:
    """transformers stopping criterion: each new token goes to its row, which says whether it is done."""

    def __init__(self, rows: list[RowState], tokenizer: Any, eos: set[int]) -> None:
        self.rows = rows
        self.tokenizer = tokenizer
        self.eos = eos

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        import torch

        newest = input_ids[:, -1].tolist()
        done = [
            row.finish is not None or row.push(token, self.tokenizer, self.eos)
            for row, token in zip(self.rows, newest, strict=True)
        ]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@dataclass
class RowState:
    """Where one request stands while it generates."""

    request: Request
    tokens: list[int] = field(default_factory=list)
    sent: int = 0  # characters already streamed
    text: str = ""
    finish: FinishReason | None = None

    def push(self, token: int, tokenizer: Any, eos: set[int]) -> bool:
        """Take the next token; True when the row is finished (EOS, its stop string or its length)."""
        if token in eos:
            self.finish = "stop"
        else:
            self.tokens.append(token)
            if self.request.on_text or self.request.stop:
                self._text(tokenizer)
            if self.finish is None and len(self.tokens) >= self.request.max_new_tokens:
                self.finish = "length"
        if self.finish is not None:
            self.close(tokenizer)
            return True
        return False

    def _text(self, tokenizer: Any) -> None:
        """Decode the row so far; cut at a stop string; stream what can no longer change."""
        text = tokenizer.decode(self.tokens, skip_special_tokens=True).lstrip()
        for stop in self.request.stop:
            at = text.find(stop)
            if at >= 0:
                text, self.finish = text[:at], "stop"
        self.text = text
        if self.request.on_text is None or self.finish is not None:
            return
        hold = max((len(s) for s in self.request.stop), default=1) - 1  # a stop string may be starting
        safe = len(text.rstrip()) - hold  # trailing space may be trimmed at the end: not sent yet
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            safe = min(safe, len(text) - 1)
        if safe > self.sent:
            self.request.on_text(text[self.sent : safe])
            self.sent = safe

    def close(self, tokenizer: Any) -> None:
        """The final text (trimmed, as summaries are); the part not yet streamed is sent."""
        if not self.request.stop:
            self.text = tokenizer.decode(self.tokens, skip_special_tokens=True)
        self.text = self.text.strip()
        if self.request.on_text is not None and len(self.text) > self.sent:
            self.request.on_text(self.text[self.sent :])
            self.sent = len(self.text)

    def completion(self) -> Completion:
        return Completion(self.text, len(self.request.prompt), len(self.tokens), self.finish or "length")
