"""The training loss, on the summary tokens only, and the validation loss each checkpoint can carry."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from steep import models
from steep.ray_jobs.batches import collate


class LabelOnlyCausalLoss(nn.Module):
    """Causal LM loss that projects to the vocabulary only where there are labels.

    A summary is ~10% of the tokens, so skipping the LM head (hidden x vocab) on prompt and padding
    positions saves most of the head's time and memory. DDP wraps this module, so gradients still sync.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.backbone = base.base_model
        self.head = base.get_output_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != models.IGNORE_INDEX
        logits = self.head(hidden[:, :-1][keep])
        return F.cross_entropy(logits.float(), targets[keep])


class ModelLoss(nn.Module):
    """The model's own loss: seq2seq (labels are all targets anyway), soft prompts, unusual heads."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        packed = {} if position_ids is None else {"position_ids": position_ids, "use_cache": False}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **packed).loss


def loss_module(model: nn.Module, kind: str, method: str) -> nn.Module:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    plain_head = not any(
        getattr(base.config, key, None)
        for key in ("final_logit_softcapping", "logit_scale", "logits_scaling")
    )
    if kind == "causal" and method != "prompt_tuning" and plain_head:
        return LabelOnlyCausalLoss(model)
    return ModelLoss(model)


def label_tokens(labels: torch.Tensor, kind: str) -> int:
    """The tokens a loss is the mean over: causal labels are shifted by one, seq2seq ones are not."""
    targets = labels[:, 1:] if kind == "causal" else labels
    return int((targets != models.IGNORE_INDEX).sum())


@torch.no_grad()
def validation_loss(
    module: nn.Module,
    examples: list[dict[str, list[int]]],
    *,
    pad_id: int,
    kind: str,
    batch_size: int,
    device: torch.device,
    autocast: Any = None,
) -> float:
    """Mean loss per label (summary) token over `examples`, in length-sorted batches (little padding).

    Each batch's mean is weighted by its label tokens, so the result does not depend on the batching.
    """
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    total, tokens = 0.0, 0
    for start in range(0, len(order), batch_size):
        batch = collate([examples[i] for i in order[start : start + batch_size]], pad_id, kind)
        count = label_tokens(batch["labels"], kind)
        if count == 0:
            continue
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast or contextlib.nullcontext():
            loss = module(**batch)
        total += float(loss) * count
        tokens += count
    return total / tokens if tokens else float("nan")
