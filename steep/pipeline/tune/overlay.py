"""The overlay a `steep tune` search writes: the best trial's settings as a steep.yaml overlay (tuned.yaml,
`steep run -c steep.yaml -c tuned.yaml`) with a header that says where they came from, and the same settings
as `--set` arguments. The user's own config is never written, nor any file steep tune did not write.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from steep.config import SteepConfig, set_path
from steep.pipeline.tune.outcomes import TrialOutcome
from steep.pipeline.tune.space import SpacePlan, TuneError
from steep.registry import METRIC_LABELS

OVERLAY_MARK = "# steep tune overlay"  # the first line of every file `steep tune` writes


def overlay_settings(outcome: TrialOutcome, plan: SpacePlan) -> dict[str, Any]:
    """The tuned keys only, in the order of the space, with the values the trial ran."""
    return {key: outcome.settings[key] for key in plan.keys if key in outcome.settings}


def overlay_yaml(settings: dict[str, Any], header: Sequence[str]) -> str:
    """A steep.yaml overlay: a comment header, then the settings as nested sections."""
    nested: dict[str, Any] = {}
    for key, value in settings.items():
        set_path(nested, key, value)
    body = yaml.safe_dump(nested, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return "".join(f"# {line}\n".replace("# \n", "#\n") for line in header) + body


def set_lines(settings: dict[str, Any]) -> list[str]:
    """The same settings as `--set key=value` arguments, quoted for a POSIX shell."""
    return [f"--set {shlex.quote(f'{key}={_set_value(value)}')}" for key, value in settings.items()]


def _set_value(value: Any) -> str:
    """A value `--set` reads back (as YAML) to the same thing: plain where it can be, else JSON."""
    if isinstance(value, str) and yaml.safe_load(value) == value:
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)


def check_output(output: Path, config_files: Sequence[Path]) -> Path:
    """Where the overlay goes: never one of the config files this tune read, never a file steep tune did
    not write."""
    output = Path(output).expanduser().resolve()
    read = {Path(f).expanduser().resolve() for f in config_files}
    if output in read:
        raise TuneError(
            f"--output {output} is a config file this tune reads; steep tune never writes your config. "
            "Choose another file, e.g. --output tuned.yaml"
        )
    if output.is_dir():
        raise TuneError(f"--output {output} is a folder; name a file, e.g. {output / 'tuned.yaml'}")
    if output.exists():
        first = output.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
        if not first.startswith(OVERLAY_MARK):
            raise TuneError(
                f"--output {output} exists and was not written by steep tune: it is left as it is. "
                "Choose another file, or delete it first"
            )
    return output


def overlay_header(
    cfg: SteepConfig, best: TrialOutcome, defaults: TrialOutcome | None, outcomes: Sequence[TrialOutcome],
    parent_id: str, parent_name: str, config_files: Sequence[Path], output: Path,
) -> list[str]:  # fmt: skip
    """The overlay's comment lines: which trial won and on what, against the defaults, and how to use it."""
    label = METRIC_LABELS[cfg.evaluation.metric]
    finished = sum(o.status == "finished" for o in outcomes)
    if defaults is None:
        versus = "the defaults did not run (tune.include_defaults is off)"
    elif defaults.status != "finished":
        versus = f"the defaults (trial {defaults.index}) did not finish: {defaults.status}"
    elif defaults is best:
        versus = f"the defaults (trial {defaults.index}) were the best: nothing beat them"
    else:
        versus = f"the defaults (trial {defaults.index}) scored {(defaults.val_score or 0) * 100:.2f}"
    base = Path(config_files[0]).name if config_files else "steep.yaml"
    return [
        f"{OVERLAY_MARK[2:]}: the settings of the best of {len(outcomes)} trials ({finished} finished),",
        f"chosen on the validation split only ({label}); the test split was not used.",
        f"best: trial {best.index} (MLflow run {best.run_id})",
        f"tune run: {parent_name} (MLflow run {parent_id}); every trial is a child run of it",
        f"validation {label} {(best.val_score or 0) * 100:.2f}; {versus}",
        f"use: steep run -c {base} -c {output.name}   (later files win; {base} itself is unchanged)",
        "",
    ]
