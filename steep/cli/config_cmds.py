"""`steep config validate | schema | show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from steep.cli.app import ConfigOpt, SetOpt, app, console, load
from steep.config import config_schema, dump_config, find_config

config_app = typer.Typer(help="Check, show and describe steep.yaml.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("validate")
def validate(
    file: Annotated[Path | None, typer.Argument(help="config file (default: ./steep.yaml)")] = None,
    sets: SetOpt = None,
) -> None:
    """Check a config file; exit 2 with the key path and the fix if it is wrong."""
    path = file or find_config()
    load(path, sets)
    console.print(f"[green]ok[/] {path} is valid")


@config_app.command("schema")
def schema() -> None:
    """Print the JSON Schema of steep.yaml (for editors and CI)."""
    console.print_json(json.dumps(config_schema()))


@config_app.command("show")
def show(config: ConfigOpt = None, sets: SetOpt = None) -> None:
    """Print the resolved config: the file, environment overrides and --set, with every default filled in."""
    typer.echo(dump_config(load(config, sets)), nl=False)
