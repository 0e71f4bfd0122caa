"""A small model of a Terraform module from python-hcl2: what it declares and what it references."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

PROVIDER_PREFIXES = ("aws", "google", "azurerm", "kubernetes", "helm", "null", "random", "tls")
_SKIP_KEYS = {"description", "error_message"}
_REF = re.compile(r"(?<![\w.\"-])(var|local|module|data)\.([A-Za-z_][\w-]*)(?:\.([A-Za-z_][\w-]*))?")
_RESOURCE_REF = re.compile(
    rf"(?<![\w.\"/-])((?:{'|'.join(PROVIDER_PREFIXES)})_[a-z0-9_]+)\.([A-Za-z_][\w-]*)"
)


def unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


@dataclass
class Module:
    path: Path
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: set[str] = field(default_factory=set)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)  # "type.name" -> body
    data: set[str] = field(default_factory=set)  # "type.name"
    modules: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    providers: set[str] = field(default_factory=set)  # required_providers keys
    expressions: list[str] = field(default_factory=list)

    def references(self) -> Iterator[tuple[str, str, str | None]]:
        for text in self.expressions:
            for kind, name, attr in _REF.findall(text):
                yield kind, name, attr or None

    def resource_references(self) -> Iterator[str]:
        for text in self.expressions:
            for rtype, name in _RESOURCE_REF.findall(text):
                yield f"{rtype}.{name}"


def _strings(node: Any, key: str | None = None) -> Iterator[str]:
    if key in _SKIP_KEYS:
        return
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(unquote(k), None)
            yield from _strings(v, unquote(k))
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item, key)


def load_module(path: Path) -> Module:
    """Parse every .tf file of a folder into one Module."""
    mod = Module(path)
    for file in sorted(path.glob("*.tf")):
        with file.open() as f:
            doc = hcl2.load(f)
        for block in doc.get("variable", []):
            for name, body in block.items():
                mod.variables[unquote(name)] = body
        for block in doc.get("locals", []):
            mod.locals |= {k for k in block if k != "__is_block__"}
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    mod.resources[f"{unquote(rtype)}.{unquote(name)}"] = body
        for block in doc.get("data", []):
            for dtype, named in block.items():
                mod.data |= {f"{unquote(dtype)}.{unquote(name)}" for name in named}
        for block in doc.get("module", []):
            for name, body in block.items():
                mod.modules[unquote(name)] = body
        for block in doc.get("output", []):
            for name, body in block.items():
                mod.outputs[unquote(name)] = body
        for block in doc.get("terraform", []):
            for req in block.get("required_providers", []):
                mod.providers |= {k for k in req if k != "__is_block__"}
        mod.expressions += [s for s in _strings(doc) if "${" in s or "." in s]
    return mod
