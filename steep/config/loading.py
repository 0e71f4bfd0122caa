"""Reading steep.yaml: find the project's file (like git), merge `-c` overlays over it, apply STEEP__
environment variables and `--set` overrides, validate, and anchor its relative paths at its folder.

A problem becomes a ConfigError whose message names the file, the key path, the bad value and the fix (with
a did-you-mean for an unknown key): users read these, so their wording is part of the interface.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ValidationError

from steep.config.errors import ConfigError
from steep.config.paths import set_path
from steep.config.schema import SteepConfig

DEFAULT_CONFIG_FILE = "steep.yaml"
ENV_PREFIX = "STEEP__"


def format_errors(err: ValidationError, model: type[BaseModel] = SteepConfig) -> str:
    """Pydantic's errors as one line per key: `training.epochs: must be >= 1, got 0`."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key{_did_you_mean(e['loc'], model)}")
            continue
        msg = e["msg"]
        for prefix in ("Value error, ", "Input should be "):
            if msg.startswith(prefix):
                msg = ("must be " if prefix == "Input should be " else "") + msg[len(prefix) :]
        msg = msg.replace("greater than or equal to", ">=").replace("less than or equal to", "<=")
        msg = msg.replace("greater than", ">").replace("less than", "<")
        shown = "" if isinstance(value, dict) or e["type"] == "missing" else f", got {value!r}"
        lines.append(f"{path}: {msg}{shown}")
    return "\n".join(lines)


def _did_you_mean(loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    """Walk the model along loc to find the keys allowed where the unknown key sits."""
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(str(part)) if hasattr(current, "model_fields") else None
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return ""
        current = field.annotation
    allowed = list(current.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; allowed: {', '.join(allowed)}"


def _parse_scalar(text: str) -> Any:
    """'3' -> 3, 'true' -> True, '[a, b]' -> list: the value is read as YAML, like the file."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(
    data: dict[str, Any], sets: list[str] | None = None, environ: dict[str, str] | None = None
) -> None:
    """Environment variables STEEP__SECTION__KEY first, then --set section.key=value (which wins)."""
    environ = os.environ if environ is None else environ
    for name, raw in sorted(environ.items()):
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            dotted = ".".join(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
            set_path(data, dotted, _parse_scalar(raw), f"environment variable {name}")
    for item in sets or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write section.key=value, e.g. --set training.epochs=2")
        key, raw = item.split("=", 1)
        set_path(data, key, _parse_scalar(raw), f"--set {item}")


def find_config(start: Path | None = None) -> Path:
    """The steep.yaml of the project the user is in: this folder's, else the nearest parent's (like git)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / DEFAULT_CONFIG_FILE).is_file():
            return folder / DEFAULT_CONFIG_FILE
    raise ConfigError(
        f"no {DEFAULT_CONFIG_FILE} in {here} or a folder above it. Create one with `steep init` "
        "(`steep init --data FILE` maps your data's columns), or pass --config FILE."
    )


def load_config(
    path: str | Path | Sequence[str | Path] | None = None,
    sets: list[str] | None = None,
    environ: dict[str, str] | None = None,
) -> SteepConfig:
    """Read steep.yaml (or defaults when it is absent and no path was asked for) plus overrides.

    Several paths: the first is the project's file, each later one an overlay merged over it in order (later
    wins, key by key; a list is replaced whole), e.g. `steep run -c steep.yaml -c tuned.yaml`. Relative paths
    in them (project.home, a local data.source or model.source) are made absolute against the first file's
    folder, so every command means the same files from wherever it is started.
    """
    files = [path] if path is None or isinstance(path, str | Path) else list(path)
    if not files:
        files = [None]
    file = Path(files[0]) if files[0] is not None else Path(DEFAULT_CONFIG_FILE)
    data: dict[str, Any] = {}
    if file.exists():
        data = _read_yaml(file)
    elif files[0] is not None:
        raise ConfigError(
            f"{file}: no such config file; create one (see `steep config show`) or pass another path"
        )
    for overlay in files[1:]:
        overlay = Path(overlay)
        if not overlay.is_file():
            raise ConfigError(f"{overlay}: no such config file (an overlay given after {file})")
        merge_config(data, _read_yaml(overlay))
    apply_overrides(data, sets, environ)
    named = " + ".join(str(f) for f in [file, *files[1:]])
    try:
        cfg = SteepConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{named}: invalid config\n{format_errors(exc)}") from exc
    cfg = anchor_paths(cfg, file.resolve().parent if file.exists() else Path.cwd())
    cfg._root = file.resolve().parent if file.exists() else None
    return cfg


def _read_yaml(file: Path) -> dict[str, Any]:
    """A config file's mapping of sections; a clear ConfigError for text that is not one."""
    try:
        raw = file.read_text(encoding="utf-8")
        loaded = yaml.safe_load(raw)
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{file}: not valid YAML{where}: {problem}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{file}: the top level must be a mapping of sections, got {type(loaded).__name__}")
    return loaded


def merge_config(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Merge `overlay` into `base` in place: mappings key by key, anything else (a list too) replaced."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_config(base[key], value)
        else:
            base[key] = value
    return base


def is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https")


def anchor_paths(cfg: SteepConfig, base: Path) -> SteepConfig:
    """The config with its relative paths resolved against `base` (the config file's folder)."""

    def absolute(value: str) -> str:
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())

    project = cfg.project.model_copy(update={"home": absolute(cfg.project.home)})
    data = cfg.data
    if not is_url(data.source):
        data = data.model_copy(update={"source": absolute(data.source)})
    model = cfg.model
    source = model.source
    # a model folder given relative to the project; a bare name stays a Hugging Face id or the offline default
    if source.startswith((".", "~")) or (not Path(source).is_absolute() and (base / source).is_dir()):
        model = model.model_copy(update={"source": absolute(source)})
    return cfg.model_copy(update={"project": project, "data": data, "model": model})
