"""The project `steep init` writes: the name, the data source and its proposals, steep.yaml and the
.gitignore line. Everything is checked before anything is written.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from steep.config import DEFAULT_CONFIG_FILE, PROJECT_NAME, PROJECT_NAME_RULE, ConfigError
from steep.data import DataError, detect_format, read_table
from steep.errors import SteepError
from steep.instruction import DEFAULT_INSTRUCTION, GENERIC, InstructionProposal, propose_instruction
from steep.scaffold.columns import NULL_MEANS, ColumnProposal, propose_columns
from steep.scaffold.render import render_config

FALLBACK_NAME = "my-summarizer"
GITIGNORE_LINE = ".steep/"


def slug(text: str) -> str:
    """A folder name as a project name: lowercase ASCII, digits and hyphens, starting with a letter."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    out = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower())
    out = re.sub(r"^[^a-z]+", "", out)
    return out[:40].strip("-")


def _valid_name(name: str) -> bool:
    return bool(PROJECT_NAME.fullmatch(name))


def choose_name(directory: Path, name: str | None) -> tuple[str, str | None]:
    """project.name: --name as given (checked), else a slug of the folder name, else a fallback and a note."""
    if name is not None:
        if not _valid_name(name):
            raise ConfigError(f"--name {name!r}: a project name must be {PROJECT_NAME_RULE}")
        return name, None
    folder = directory.resolve().name
    candidate = slug(folder)
    if _valid_name(candidate):
        return candidate, None
    note = (
        f"project.name is {FALLBACK_NAME!r}: the folder name {folder!r} does not make a valid one "
        f"({PROJECT_NAME_RULE}); change it in steep.yaml or pass --name"
    )
    return FALLBACK_NAME, note


def read_data(path: Path) -> pd.DataFrame:
    """The data file read exactly as `steep run` reads it, so init sees the same columns."""
    if not path.exists():
        raise DataError(f"--data {path}: no such file. Point --data at a JSONL, JSON, CSV or Parquet file.")
    if path.is_dir():
        raise DataError(f"--data {path} is a folder; point it at one JSONL, JSON, CSV or Parquet file")
    return read_table(path, detect_format(path, "auto"))


def source_for(data: Path, directory: Path) -> str:
    """data.source: relative to the project folder when the file lies inside it (load_config anchors it
    there), so the project can move as a whole; absolute otherwise."""
    resolved, home = data.resolve(), directory.resolve()
    try:
        return resolved.relative_to(home).as_posix()
    except ValueError:
        return resolved.as_posix()


def ensure_gitignore(directory: Path) -> str:
    """Keep steep's state folder out of git: 'created', 'added' or 'unchanged'."""
    path = directory / ".gitignore"
    if not path.exists():
        path.write_text(f"{GITIGNORE_LINE}\n", encoding="utf-8")
        return "created"
    text = path.read_text(encoding="utf-8")
    present = {line.strip().strip("/") for line in text.splitlines()}
    if GITIGNORE_LINE.strip("/") in present:
        return "unchanged"
    sep = "" if not text or text.endswith("\n") else "\n"
    path.write_text(f"{text}{sep}{GITIGNORE_LINE}\n", encoding="utf-8")
    return "added"


def instruction_for(frame: pd.DataFrame, proposal: ColumnProposal) -> InstructionProposal:
    """model.instruction from the texts and summaries init mapped; generic while the text column is open."""
    text, summary = proposal.role("text").column, proposal.role("summary").column
    if text is None:
        why = (
            "the text column is an open QUESTION: a generic instruction; name your kind of text once answered"
        )
        return InstructionProposal(GENERIC, DEFAULT_INSTRUCTION, why)
    return propose_instruction(frame[text].tolist(), frame[summary].tolist() if summary else [])


_SOURCE_HINT = (
    "Point data.source at your data: a local JSONL, JSON, CSV or Parquet file (or an http(s) URL), set "
    "sha256: null for a local file, and map its columns below. `steep init --data FILE` proposes the "
    "mapping. The default is the public legal summarization set (Manor & Li 2019)."
)


def project_config(
    name: str,
    source: str | None,
    proposal: ColumnProposal | None,
    instruction: InstructionProposal | None = None,
) -> str:
    """The steep.yaml text for a new project: defaults, the name, and the data mapping and the model
    instruction when there is data."""
    values: dict[str, Any] = {"project.name": name}
    notes: dict[str, str] = {}
    questions: dict[str, str] = {}
    above = {"data.source": _SOURCE_HINT}
    if source is not None:
        values |= {"data.source": source, "data.format": "auto", "data.sha256": None}
        where = "" if Path(source).is_absolute() else " (relative to this file's folder)"
        above = {"data.source": f"read by `steep init`{where}; check the column mapping it proposed below"}
        notes["data.sha256"] = "a local file needs no checksum"
    if proposal is not None:
        values |= proposal.settings()
        for r in proposal.roles:
            if r.question is None:
                notes[r.key] = r.why
                continue
            questions[r.key] = r.question_line()
            above[r.key] = f"({r.why})"
            notes[r.key] = (
                "answer the QUESTION above; steep stops with an error while this is null"
                if r.required
                else NULL_MEANS[r.role]
            )
    if instruction is not None:
        values["model.instruction"] = instruction.instruction
        notes["model.instruction"] = instruction.why
    return render_config(values, notes=notes, above=above, questions=questions)


@dataclass(frozen=True)
class InitResult:
    config: Path
    gitignore: str
    name: str
    name_note: str | None
    source: str | None
    proposal: ColumnProposal | None
    instruction: InstructionProposal | None = None


def write_project(
    directory: Path, *, data: Path | None = None, force: bool = False, name: str | None = None
) -> InitResult:
    """Write DIR/steep.yaml and the .gitignore line; nothing else. Everything is checked before writing."""
    directory = Path(directory)
    config = directory / DEFAULT_CONFIG_FILE
    if config.exists() and not force:
        raise SteepError(f"{config} already exists; pass --force to overwrite it")
    if directory.exists() and not directory.is_dir():
        raise SteepError(f"{directory} is a file, not a folder; give init a folder for the project")
    project_name, note = choose_name(directory, name)
    proposal = source = instruction = None
    if data is not None:
        frame = read_data(Path(data))
        proposal = propose_columns(frame)
        instruction = instruction_for(frame, proposal)
        source = source_for(Path(data), directory)
    text = project_config(project_name, source, proposal, instruction)
    directory.mkdir(parents=True, exist_ok=True)
    config.write_text(text, encoding="utf-8")
    gitignore = ensure_gitignore(directory)
    return InitResult(config, gitignore, project_name, note, source, proposal, instruction)
