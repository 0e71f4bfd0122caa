"""steep.yaml rendered from the SteepConfig model: every section, key, default and description in the file is
the one steep uses, so the written file cannot drift from the model.

Values, trailing notes, comment blocks and QUESTION lines can be put in per key (section.key); trailing
comments are aligned per section and go above a key when the line would pass LINE_WIDTH.
"""

from __future__ import annotations

import textwrap
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from steep.config import SteepConfig

LINE_WIDTH = 110
_MAX_ALIGN = 44  # trailing comments line up at most this far right; longer lines just get two spaces

HEADER = """\
# steep.yaml: the one file that configures steep, written by `steep init` from the config model. Every key
# shows its default; delete a key to keep the default. `steep config show` prints the resolved config.
# Main commands: `steep validate` checks the data, `steep run` trains, evaluates and registers a model,
# `steep serve` serves the champion over HTTP.
"""


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _choices(annotation: Any) -> list[str]:
    """The allowed values of a Literal (or Literal | None) field, for the comment."""
    if typing.get_origin(annotation) is Literal:
        return [str(a) for a in typing.get_args(annotation)]
    args = typing.get_args(annotation)
    literals = [a for a in args if typing.get_origin(a) is Literal]
    if literals and all(a is type(None) or a in literals for a in args):
        return [str(v) for lit in literals for v in typing.get_args(lit)]
    return []


def yaml_value(value: Any) -> str:
    """One value as it appears after `key: ` (flow style for lists and mappings, quoted where needed)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, allow_unicode=True, sort_keys=False)
    return text.strip().removesuffix("\n...").strip()


def _comment_block(text: str, pad: str) -> list[str]:
    width = max(LINE_WIDTH - len(pad) - 2, 40)
    return [f"{pad}# {line}" for line in textwrap.wrap(text, width, break_on_hyphens=False)]


@dataclass
class _Line:
    pad: str
    text: str  # "key: value", or "key:" for a section
    comment: str = ""
    above: list[str] = field(default_factory=list)
    section: bool = False
    parent: str = ""


def model_paths(model: type[BaseModel] = SteepConfig, prefix: str = "") -> list[str]:
    """Every leaf key of the model as section.key (nested sections walked)."""
    paths = []
    for name, info in model.model_fields.items():
        sub = _section_type(info.annotation)
        paths += model_paths(sub, f"{prefix}{name}.") if sub else [f"{prefix}{name}"]
    return paths


def render_config(
    values: Mapping[str, Any] | None = None,
    *,
    notes: Mapping[str, str] | None = None,
    above: Mapping[str, str] | None = None,
    questions: Mapping[str, str] | None = None,
) -> str:
    """steep.yaml text for the defaults of SteepConfig, with `values` (section.key -> value) put in.

    notes replace a key's trailing comment (else its Field description, plus the allowed values of a Literal);
    above adds a comment block over a key; questions add a `# QUESTION: ...` line over a key.
    """
    values, notes, above, questions = values or {}, notes or {}, above or {}, questions or {}
    known = set(model_paths())
    unknown = sorted((set(values) | set(notes) | set(above) | set(questions)) - known)
    if unknown:
        raise ValueError(f"not keys of SteepConfig: {', '.join(unknown)}")
    lines: list[_Line] = []

    def walk(model: type[BaseModel], defaults: dict[str, Any], prefix: str, depth: int) -> None:
        pad = "  " * depth
        for name, info in model.model_fields.items():
            path = f"{prefix}{name}"
            sub = _section_type(info.annotation)
            if sub is not None:
                lines.append(_Line(pad, f"{name}:", info.description or "", section=True, parent=prefix))
                walk(sub, defaults[name], f"{path}.", depth + 1)
                continue
            value = values.get(path, defaults[name])
            comment = notes.get(path)
            if comment is None:
                choices = " | ".join(_choices(info.annotation))
                desc = info.description or ""
                comment = f"{choices}: {desc}" if choices and desc else choices or desc
            block = _comment_block(above[path], pad) if path in above else []
            if path in questions:
                block += _comment_block(f"QUESTION: {questions[path]}", pad)
            flow = f"{name}: {yaml_value(value)}"
            if isinstance(value, dict) and value and len(pad + flow) > LINE_WIDTH:  # one key a line
                lines.append(_Line(pad, f"{name}:", comment, block, parent=prefix))
                for key, item in value.items():
                    lines.append(_Line(pad + "  ", f"{yaml_value(key)}: {yaml_value(item)}", parent=path))
                continue
            lines.append(_Line(pad, flow, comment, block, parent=prefix))

    walk(SteepConfig, SteepConfig().model_dump(mode="json"), "", 0)
    return HEADER + _format(lines)


def _format(lines: list[_Line]) -> str:
    """Trailing comments aligned per section; a comment too long for its line goes above the key."""
    widths: dict[str, int] = {}
    for ln in lines:
        width = len(ln.pad + ln.text)
        if not ln.section and width <= _MAX_ALIGN:
            widths[ln.parent] = max(widths.get(ln.parent, 0), width)
    out: list[str] = []
    for ln in lines:
        if ln.section and not ln.pad:
            out.append("")
        out.extend(ln.above)
        body = ln.pad + ln.text
        col = widths.get(ln.parent, 0) + 2
        inline = f"{body.ljust(col) if len(body) < col else body + '  '}# {ln.comment}"
        if not ln.comment:
            out.append(body)
        elif len(inline) <= LINE_WIDTH:
            out.append(inline)
        else:
            out.extend(_comment_block(ln.comment, ln.pad))
            out.append(body)
    return "\n".join(out) + "\n"
