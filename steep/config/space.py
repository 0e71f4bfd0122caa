"""What `steep tune` may search, and how a key's range is written in steep.yaml's `tune.space`.

Tunable are the training settings (less the few that change no result or belong to the cluster:
NOT_TUNABLE says why for each), the prompt (TUNABLE_MODEL_KEYS) and how summaries are decoded
(DECODING_KEYS). The tune section itself (TuneConfig) is in steep.config.schema, beside SteepConfig: a key
of the space that is a real key but not a tunable one is told so, which needs the whole file's keys.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from typing import Any

from pydantic import Field, model_serializer, model_validator

from steep.config.paths import leaf_keys
from steep.config.sections import Section, ServingConfig, TrainingConfig

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
# what `steep tune` may search: training settings, the prompt, and how summaries are decoded
TUNABLE_MODEL_KEYS = ("max_source_tokens", "max_target_tokens", "instruction", "task_prefix")
DECODING_KEYS = ("max_new_tokens", "repetition_penalty", "num_beams", "length_penalty")
NOT_TUNABLE = {
    "training.workers": "each trial trains in-process in one Ray task of its own (training.workers=0)",
    "training.use_gpu": "it is a property of the cluster, not a setting to search",
    "training.placement": "each trial trains in-process in one Ray task of its own",
    "training.max_failures": "a failed trial is reported and the search goes on",
    "training.checkpoint_every_steps": "it changes no result, only what a crash costs",
    "training.merge_weights": "it changes how the model is stored, not what it generates",
    "training.validation_loss": "steep tune always computes it: its early stopping reads it",
}


class Distribution(Section):
    """One key's search range: exactly one of choice / uniform / loguniform / randint."""

    choice: list[Any] | None = Field(None, min_length=1, description="one of these values")
    uniform: tuple[float, float] | None = Field(None, description="[low, high]: any number between")
    loguniform: tuple[float, float] | None = Field(
        None, description="[low, high], both > 0: uniform on a log scale (learning rates)"
    )
    randint: tuple[int, int] | None = Field(None, description="[low, high]: a whole number, both included")

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [k for k in DISTRIBUTIONS if getattr(self, k) is not None]
        if len(given) != 1:
            got = f"; got {' and '.join(given)}" if given else ""
            raise ValueError(
                f"give exactly one of {', '.join(DISTRIBUTIONS)}, e.g. {{loguniform: [1e-4, 2e-3]}} or "
                f"{{choice: [8, 16, 32]}}{got}"
            )
        if self.kind != "choice":
            low, high = self.args
            if not low < high:
                raise ValueError(f"{self.kind}: low must be below high, got [{low:g}, {high:g}]")
            if self.kind == "loguniform" and low <= 0:
                raise ValueError(f"loguniform: both ends must be > 0, got [{low:g}, {high:g}]")
        return self

    @model_serializer(mode="wrap")
    def _only_the_given(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}

    @property
    def kind(self) -> str:
        return next(k for k in DISTRIBUTIONS if getattr(self, k) is not None)

    @property
    def args(self) -> Any:
        return getattr(self, self.kind)


def default_space() -> dict[str, Distribution]:
    """What a user would tune first: the rate, how long, the LoRA rank, the batch, and decoding."""
    space: dict[str, dict[str, Any]] = {
        "training.learning_rate": {"loguniform": [1e-4, 2e-3]},
        "training.epochs": {"choice": [1, 2, 3]},
        "training.lora.r": {"choice": [8, 16, 32]},
        "training.batch_size": {"choice": [4, 8, 16]},
        "serving.max_new_tokens": {"choice": [32, 48, 64]},
    }
    if "repetition_penalty" in ServingConfig.model_fields:
        space["serving.repetition_penalty"] = {"uniform": [1.0, 1.3]}
    if "num_beams" in ServingConfig.model_fields:
        space["serving.num_beams"] = {"choice": [1, 2, 4]}
    return {key: Distribution.model_validate(value) for key, value in space.items()}


def tunable_keys() -> list[str]:
    """The keys `tune.space` may name."""
    out = [k for k in leaf_keys(TrainingConfig, "training.") if k not in NOT_TUNABLE]
    out += [f"model.{k}" for k in TUNABLE_MODEL_KEYS]
    return out + [f"serving.{k}" for k in DECODING_KEYS if k in ServingConfig.model_fields]


def tunable_space(space: dict[str, Distribution], every_key: Collection[str]) -> dict[str, Distribution]:
    """`space` when it names tunable keys only; else a ValueError that says why the key cannot be tuned
    (`every_key`: every key of steep.yaml, to tell a real but untunable key from a typo)."""
    allowed = tunable_keys()
    for key in space:
        if key in allowed:
            continue
        if key in NOT_TUNABLE:
            raise ValueError(f"{key} cannot be tuned: {NOT_TUNABLE[key]}")
        inside = [k for k in allowed if k.startswith(key + ".")]
        if inside:
            raise ValueError(f"{key} is a section: name one of its keys, e.g. {', '.join(inside[:4])}")
        if key in every_key:
            raise ValueError(
                f"{key} cannot be tuned: steep tune searches training, model prompt and decoding "
                f"settings ({', '.join(allowed)})"
            )
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown key {key!r}{hint}; tunable keys: {', '.join(allowed)}")
    return space
