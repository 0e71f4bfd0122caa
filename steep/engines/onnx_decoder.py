"""Iteration-level batching on ONNX Runtime: the `Batch` that steep.generation's Decoder is, on an export.

Each row owns a slot of one key/value buffer per layer, [rows, kv heads, capacity, head size], that the
model reads as its past and writes as its present in place (the builder's GroupQueryAttention shares the
buffer when both are bound to it), so a step copies no cache. A row's length is the sum of its attention mask
row: its keys sit right-padded in its slot. A request is prefilled alone, then its keys move into a free slot;
a finished row's slot is filled by the last row, so the rows stay the first `len(rows)` slots.

Every prompt starts with the same frame (the chat template and the instruction: 38 of ~200 tokens for the
legal set): its keys are computed once per model and each prefill runs only the rest of its prompt.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from steep.generation import Completion, Request, RowState, choose_tokens, eos_ids


@dataclass
class OnnxModel:
    """An exported model loaded into an ONNX Runtime session, with the cache geometry it expects."""

    session: Any
    layers: int
    kv_heads: int
    head_size: int
    dtype: Any
    folder: Path
    prefixes: dict[tuple[int, ...], dict[str, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path, threads: int | None = None) -> OnnxModel:
        import onnxruntime as ort

        decoder = json.loads(Path(folder, "genai_config.json").read_text())["model"]["decoder"]
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: the terminal shows steep's lines
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(
            str(Path(folder, decoder["filename"])), options, providers=["CPUExecutionProvider"]
        )
        past = next(i for i in session.get_inputs() if i.name.startswith("past_key_values"))
        return cls(
            session=session,
            layers=decoder["num_hidden_layers"],
            kv_heads=decoder["num_key_value_heads"],
            head_size=decoder["head_size"],
            dtype=np.float16 if "float16" in past.type else np.float32,
            folder=Path(folder),
        )

    def run(self, ids: list[int], past: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """One sequence through the model after `past` (the keys of the tokens before it, or none)."""
        length = len(ids) + (next(iter(past.values())).shape[2] if past else 0)
        if past is None:
            empty = np.zeros((1, self.kv_heads, 0, self.head_size), self.dtype)
            past = {name: empty for name, _ in self.names()}
        outputs = self.session.run(
            None,
            {
                "input_ids": np.asarray([ids], np.int64),
                "attention_mask": np.ones((1, length), np.int64),
                **past,
            },
        )
        return dict(zip((o.name for o in self.session.get_outputs()), outputs, strict=True))

    def prefix_keys(self, prefix: tuple[int, ...]) -> dict[str, np.ndarray]:
        """The past of every prompt that starts with `prefix`, computed once."""
        if prefix not in self.prefixes:
            named = self.run(list(prefix))
            self.prefixes[prefix] = {past: named[present] for past, present in self.names()}
        return self.prefixes[prefix]

    def names(self) -> list[tuple[str, str]]:
        """(past input, present output) per layer and tensor: the pairs that share a buffer."""
        return [
            (f"past_key_values.{layer}.{kind}", f"present.{layer}.{kind}")
            for layer in range(self.layers)
            for kind in ("key", "value")
        ]


class OnnxDecoder:
    """Rows join after their own prefill and leave when finished; see the module docstring."""

    def __init__(self, model: OnnxModel, tokenizer: Any, prefix: list[int] | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.prefix = tuple(prefix or ())  # the frame every prompt starts with: its keys are reused
        self.eos = eos_ids(tokenizer)
        self.keys: list[Hashable] = []
        self.rows: list[RowState] = []
        self.lengths: list[int] = []  # tokens in each row's cache
        self.next_ids: list[int] = []  # the token each row feeds next
        self.finished: list[tuple[Hashable, Completion]] = []
        self.buffers: dict[str, np.ndarray] = {}
        self.binding = model.session.io_binding()

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.finished)

    def add(self, key: Hashable, request: Request) -> None:
        """Prefill the prompt alone, pick its first token; the row takes a slot unless that finished it."""
        import torch

        row = RowState(request)
        prompt, length, shared = request.prompt, len(request.prompt), len(self.prefix)
        if shared and length > shared and tuple(prompt[:shared]) == self.prefix:
            named = self.model.run(prompt[shared:], self.model.prefix_keys(self.prefix))
        else:
            named = self.model.run(prompt)
        [token] = choose_tokens(torch.from_numpy(named["logits"][:, -1].astype(np.float32)), [row])
        if row.push(token, self.tokenizer, self.eos):
            self.finished.append((key, row.completion()))
            return
        slot = len(self.rows)
        self._reserve(slot + 1, length + request.max_new_tokens)
        for past, present in self.model.names():
            self.buffers[past][slot, :, :length] = named[present][0]
        self.keys.append(key)
        self.rows.append(row)
        self.lengths.append(length)
        self.next_ids.append(token)

    def step(self) -> list[tuple[Hashable, Completion]]:
        """One token for every row; the rows that finished (here, or when they were added) leave."""
        import onnxruntime as ort
        import torch

        finished, self.finished = self.finished, []
        if not self.rows:
            return finished
        count, capacity = len(self.rows), self._capacity()
        mask = np.zeros((count, capacity), np.int64)
        for i, length in enumerate(self.lengths):
            mask[i, : length + 1] = 1  # its cache and the token it feeds now
        binding = self.binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        binding.bind_cpu_input("input_ids", np.asarray(self.next_ids, np.int64)[:, None])
        binding.bind_cpu_input("attention_mask", mask)
        for past, present in self.model.names():
            shared = ort.OrtValue.ortvalue_from_numpy(self.buffers[past][:count])  # a view: no copy
            binding.bind_ortvalue_input(past, shared)
            binding.bind_ortvalue_output(present, shared)
        binding.bind_output("logits")
        self.model.session.run_with_iobinding(binding)
        logits = torch.from_numpy(binding.get_outputs()[-1].numpy()[:, -1])  # the logits alone: no cache copy
        keep = []
        for i, (row, token) in enumerate(zip(self.rows, choose_tokens(logits, self.rows), strict=True)):
            self.lengths[i] += 1
            if row.push(token, self.tokenizer, self.eos):
                finished.append((self.keys[i], row.completion()))
            else:
                keep.append(i)
                self.next_ids[i] = token
        if len(keep) < count:
            self._leave(keep)
        return finished

    def _capacity(self) -> int:
        return next(iter(self.buffers.values())).shape[2] if self.buffers else 0

    def _reserve(self, rows: int, length: int) -> None:
        """Grow the buffers (doubling) to hold `rows` slots of `length` tokens; rows in them move along."""
        have_rows = next(iter(self.buffers.values())).shape[0] if self.buffers else 0
        have_length = self._capacity()
        if rows <= have_rows and length <= have_length:
            return
        new_rows, new_length = max(rows, 2 * have_rows), max(length, have_length)
        shape = (new_rows, self.model.kv_heads, new_length, self.model.head_size)
        for past, _ in self.model.names():
            grown = np.zeros(shape, self.model.dtype)
            if past in self.buffers:
                old = self.buffers[past]
                grown[: old.shape[0], :, : old.shape[2]] = old
            self.buffers[past] = grown

    def _leave(self, keep: list[int]) -> None:
        """Finished rows leave; the rows that stay move, in order, into the first slots."""
        for slot, i in enumerate(keep):
            if slot != i:
                used = self.lengths[i]
                for buffer in self.buffers.values():
                    buffer[slot, :, :used] = buffer[i, :, :used]
        self.keys = [self.keys[i] for i in keep]
        self.rows = [self.rows[i] for i in keep]
        self.lengths = [self.lengths[i] for i in keep]
        self.next_ids = [self.next_ids[i] for i in keep]
