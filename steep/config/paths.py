"""Dotted keys (`training.lora.r`) over a config's nested mappings: what `--set`, STEEP__ variables, the tune
space and its overlay all name. One pair of helpers, so every place reads and writes a key the same way."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from steep.config.errors import ConfigError


def get_path(data: dict[str, Any], key: str) -> Any:
    """The value at dotted `key` in nested mappings; KeyError when a part is missing."""
    node: Any = data
    for part in key.split("."):
        node = node[part]
    return node


def set_path(data: dict[str, Any], key: str, value: Any, origin: str | None = None) -> None:
    """Set dotted `key` in nested mappings, making the sections on the way. `origin` (where the key came
    from: `--set training.epochs=2`, an environment variable) starts the message of a key that cannot be
    set."""
    origin = origin or f"key {key!r}"
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"{origin}: empty key; write section.key=value, e.g. training.epochs=2")
    node = data
    for part in keys[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: {part} is not a section, cannot set {key}")
        node = child
    node[keys[-1]] = value


def leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every settable key under `model` as a dotted path (sections are walked, not listed)."""
    keys = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys.extend(leaf_keys(field.annotation, path + "."))
        else:
            keys.append(path)
    return keys
