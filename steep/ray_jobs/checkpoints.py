"""A training checkpoint on disk: the trainable weights, optimizer and schedule, the loop's state, and in the
last one the trained model exported as a folder `models.load_for_inference` reads.

Only the trainable weights are saved (a LoRA adapter, not the frozen base model): a checkpoint of SmolLM2
with LoRA is a few MB, so checkpointing every epoch costs little.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steep import models

STATE_FILE = "state.json"
TRAINABLE_FILE = "trainable.pt"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
MODEL_DIR = "model"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only what training changes: the adapter or soft prompt, or every weight for method=full."""
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k in names}


def save_checkpoint(folder: Path, model: nn.Module, optimizer, scheduler, state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(trainable_state(model), folder / TRAINABLE_FILE)
    torch.save(optimizer.state_dict(), folder / OPTIMIZER_FILE)
    torch.save(scheduler.state_dict(), folder / SCHEDULER_FILE)
    (folder / STATE_FILE).write_text(json.dumps(state))


def load_checkpoint(folder: Path, model: nn.Module, optimizer, scheduler) -> dict[str, Any]:
    model.load_state_dict(torch.load(folder / TRAINABLE_FILE, weights_only=True), strict=False)
    optimizer.load_state_dict(torch.load(folder / OPTIMIZER_FILE, weights_only=True))
    scheduler.load_state_dict(torch.load(folder / SCHEDULER_FILE, weights_only=True))
    return json.loads((folder / STATE_FILE).read_text())


def export_model(folder: Path, model: nn.Module, tokenizer, fmt: models.PromptFormat) -> None:
    """What inference loads: the PEFT adapter (or full weights) + tokenizer + prompt format."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    fmt.save(folder)
