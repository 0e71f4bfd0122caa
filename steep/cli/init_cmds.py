"""`steep init [DIR] [--data FILE] [--force] [--name NAME]`: start a project with a commented steep.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from steep.cli.app import app, console
from steep.config import ValidationConfig
from steep.instruction import InstructionProposal
from steep.scaffold import GITIGNORE_LINE, ColumnProposal, InitResult, write_project

_GITIGNORE = {
    "created": f"wrote {{}} ({GITIGNORE_LINE} kept out of git)",
    "added": f"added {GITIGNORE_LINE} to {{}}",
    "unchanged": f"{{}} already ignores {GITIGNORE_LINE}",
}


def print_proposal(
    proposal: ColumnProposal, source: str, instruction: InstructionProposal | None = None
) -> None:
    table = Table(title=f"column mapping proposed for {escape(source)} ({proposal.rows:,} rows)")
    table.add_column("key", no_wrap=True)
    table.add_column("column", no_wrap=True)
    table.add_column("why", overflow="fold")
    for r in proposal.roles:
        if r.question is not None:
            column = "[bold yellow]? " + ("null" if r.required else "null (ok)") + "[/]"
        else:
            column = escape(r.column) if r.column is not None else "null"
        table.add_row(r.key, column, escape(r.why))
    console.print(table)
    if instruction is not None:  # what the model is told, read from the same texts
        said, why = escape(instruction.instruction), escape(instruction.why)
        console.print(f"model.instruction: [bold]{said}[/] ({why})")


def print_result(result: InitResult, directory: Path) -> None:
    if result.proposal is not None and result.source is not None:
        print_proposal(result.proposal, result.source, result.instruction)
    console.print(f"[green]wrote[/] {escape(str(result.config))} (project.name: {result.name})")
    console.print(_GITIGNORE[result.gitignore].format(escape(str(result.config.parent / ".gitignore"))))
    min_rows = ValidationConfig().min_rows
    if result.proposal is not None and result.proposal.rows < min_rows:
        console.print(
            f"[yellow]note:[/] the file has {result.proposal.rows} rows; validation.min_rows is {min_rows}, "
            "so `steep validate` fails until there are more (or lower it in steep.yaml)"
        )
    if result.name_note:
        console.print(f"[yellow]note:[/] {escape(result.name_note)}")
    if result.proposal is None:
        console.print(
            "data.source still points at the default legal summarization set: point it at your data "
            "in steep.yaml, or rerun with --data FILE --force to have the columns mapped"
        )
    questions = result.proposal.questions if result.proposal else []
    must = [q for q in questions if q.required]
    if must:
        console.print(
            f"[bold yellow]answer {len(must)} question(s) in steep.yaml before `steep run`[/] "
            "(lines starting with # QUESTION; steep stops with an error until they are answered):"
        )
        for q in must:
            console.print(f"  {q.key}: {escape(q.question_line())}")
    optional = [q for q in questions if not q.required]
    if optional:
        console.print("[yellow]worth a look[/] (left null, which works; see # QUESTION in steep.yaml):")
        for q in optional:
            console.print(f"  {q.key}: {escape(q.question_line())}")
    here = directory.resolve() == Path.cwd().resolve()
    console.print("next:" + ("" if here else f" cd {escape(str(directory))}, then"))
    console.print("  steep config show   the resolved config")
    console.print("  steep validate      check the data")
    console.print("  steep run           train, evaluate and register a model")


@app.command("init")
def init(
    directory: Annotated[Path, typer.Argument(help="project folder (created if missing)")] = Path("."),
    data: Annotated[
        Path | None,
        typer.Option("--data", help="a JSONL, JSON, CSV or Parquet file: its columns are mapped for you"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing steep.yaml")] = False,
    name: Annotated[
        str | None, typer.Option("--name", help="project.name (default: from the folder name)")
    ] = None,
) -> None:
    """Write a commented steep.yaml (every key, its default and what it means) and a .gitignore line."""
    result = write_project(directory, data=data, force=force, name=name)
    print_result(result, directory)
