"""A training step's examples as tensors: which examples share a step, and how they become rows.

Length-grouped batches (similar lengths share a step, so little padding) in an order that is a pure function
of (seed, epoch): a resumed worker skips exactly the steps it already did. Rows are padded to the longest
example, or packed end to end (`training.packing`) with attention kept inside each example.
"""

from __future__ import annotations

import random

import torch

from steep import models


def plan_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int, world: int = 1
) -> list[list[int]]:
    """Length-grouped batches: shuffle, sort within windows of 16 batches, shuffle the batches.

    Examples of similar length share a batch (little padding) while batch order stays random. Batches too
    small to give every worker one example are dropped (DDP needs every rank to step).
    """
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 16
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i], reverse=True)
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    batches = [b for b in batches if len(b) >= world]
    rng.shuffle(batches)
    return batches


def collate(examples: list[dict[str, list[int]]], pad_id: int, kind: str) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example of this micro-batch; labels are -100 on padding."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    label_width = width if kind == "causal" else max(len(e["labels"]) for e in examples)
    labels = torch.full((len(examples), label_width), models.IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, :n] = torch.tensor(e["input_ids"])
        mask[row, :n] = 1
        labels[row, : len(e["labels"])] = torch.tensor(e["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pack_rows(lengths: list[int], ids: list[int], width: int) -> list[list[int]]:
    """First-fit decreasing: a step's examples into as few rows of `width` tokens as they fit in."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(ids, key=lambda i: lengths[i], reverse=True):
        row = next((r for r, free in enumerate(room) if lengths[i] <= free), None)
        if row is None:
            rows.append([i])
            room.append(max(width, lengths[i]) - lengths[i])
        else:
            rows[row].append(i)
            room[row] -= lengths[i]
    return rows


def collate_packed(rows: list[list[dict[str, list[int]]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Causal examples laid end to end in each row, positions restarting at 0 for each example.

    No attention mask: transformers reads the restarts in `position_ids` as sequence boundaries and keeps
    attention inside each example (a block-diagonal mask with SDPA, variable-length kernels with
    flash_attention_2 / flex_attention). An example's first token is never a target (it would be predicted
    from the previous example); the padding at a row's end is a sequence of its own.
    """
    width = max(sum(len(e["input_ids"]) for e in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), models.IGNORE_INDEX, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e["input_ids"])
            ids[r, at : at + n] = torch.tensor(e["input_ids"])
            positions[r, at : at + n] = torch.arange(n)
            labels[r, at + 1 : at + n] = torch.tensor(e["labels"][1:n])
            at += n
        positions[r, at:] = torch.arange(width - at)
    return {"input_ids": ids, "position_ids": positions, "labels": labels}


def make_batch(
    examples: list[dict[str, list[int]]],
    ids: list[int],
    lengths: list[int],
    pad_id: int,
    kind: str,
    pack_width: int | None,
) -> dict[str, torch.Tensor]:
    """One worker's share of a step: packed rows when `pack_width` is set, else padded to the longest."""
    if pack_width is None:
        return collate([examples[i] for i in ids], pad_id, kind)
    rows = pack_rows(lengths, ids, pack_width)
    return collate_packed([[examples[i] for i in row] for row in rows], pad_id)
