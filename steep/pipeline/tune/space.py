"""The space a `steep tune` search runs over: `tune.space` checked value by value against the config
before any trial runs, with the base config's own value of each key (the defaults' trial) and how Ray Tune
samples it."""

from __future__ import annotations

import copy
import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from steep.config import Distribution, SteepConfig, format_errors, get_path, set_path
from steep.errors import SteepError

SIGNIFICANT_DIGITS = 4  # sampled numbers are rounded to this before a trial uses them


class TuneError(SteepError):
    """The search cannot start, or no trial finished; the message says why and what to change."""


def settle(value: Any) -> Any:
    """A sampled float rounded to 4 significant digits (what the trial then uses, and the overlay says)."""
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return value


@dataclass(frozen=True)
class SpacePlan:
    """The validated search space and the base config's own value of each of its keys."""

    space: dict[str, Distribution]
    defaults: dict[str, Any]

    @property
    def keys(self) -> list[str]:
        return list(self.space)

    def max_epochs(self, base_epochs: int) -> int:
        """The most epochs a trial may train: where ASHA's rungs end."""
        dist = self.space.get("training.epochs")
        if dist is None:
            return base_epochs
        values = dist.choice if dist.kind == "choice" else dist.args
        return max(1, int(max(v for v in values if isinstance(v, int | float))))

    def distinct_points(self, trials: int, include_defaults: bool, seed: int) -> list[dict[str, Any]] | None:
        """A space of choices only is drawn without repeats: up to `trials` distinct settings in a seeded
        order, the config's own first (with tune.include_defaults). None when a key is a range: Ray Tune
        samples those."""
        if any(dist.kind != "choice" for dist in self.space.values()):
            return None
        values = itertools.product(*(list(dist.args) for dist in self.space.values()))
        combos = [dict(zip(self.keys, combo, strict=True)) for combo in values]
        random.Random(seed).shuffle(combos)
        first = [dict(self.defaults)] if include_defaults else []
        return (first + [c for c in combos if c not in first])[:trials]

    def domains(self) -> dict[str, Any]:
        """The space as Ray Tune samples it (randint's high end included, as the config says)."""
        from ray import tune

        make = {
            "choice": lambda a: tune.choice(list(a)),
            "uniform": lambda a: tune.uniform(*a),
            "loguniform": lambda a: tune.loguniform(*a),
            "randint": lambda a: tune.randint(a[0], a[1] + 1),
        }
        return {key: make[dist.kind](dist.args) for key, dist in self.space.items()}


def plan_space(cfg: SteepConfig) -> SpacePlan:
    """`tune.space` checked value by value against the rest of the config, before any trial runs.

    Every choice, both ends of a range and (for uniform / loguniform) a number between them are set into
    the config one at a time and validated as steep.yaml would be: a value the config refuses is an error
    naming the key, the value and the rule, not a failed trial an hour in. Combinations of values are not
    checked here (a trial they break fails and is reported).
    """
    space = cfg.tune.space
    if not space:
        raise TuneError("tune.space is empty: name at least one key to search, e.g. training.learning_rate")
    base = cfg.model_dump(mode="json")
    problems = [problem for key, dist in space.items() for problem in _check_values(base, key, dist)]
    if problems:
        raise TuneError("tune.space: values the config would refuse:\n  " + "\n  ".join(problems))
    return SpacePlan(dict(space), {key: get_path(base, key) for key in space})


def _check_values(base: dict[str, Any], key: str, dist: Distribution) -> list[str]:
    if dist.kind == "choice":
        values = list(dist.choice or [])
    else:
        low, high = dist.args
        values = [low, high]
        if dist.kind != "randint":  # a number between: a key of whole numbers refuses it
            values.append(settle(low + (high - low) * 0.381966))
    problems = []
    for value in values:
        data = copy.deepcopy(base)
        set_path(data, key, value)
        try:
            SteepConfig.model_validate(data)
        except ValidationError as exc:
            why = format_errors(exc).splitlines()[0]
            if dist.kind in ("uniform", "loguniform") and isinstance(get_path(base, key), int):
                why += f" ({key} takes whole numbers: use choice or randint)"
            problems.append(f"{key}: {dist.kind} {list(dist.args)} can give {value!r}, refused: {why}")
            break  # one refused value per key says enough
    return problems
