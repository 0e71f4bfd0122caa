"""The `steep` command: a thin layer over steep's core functions (cli -> core -> runners).

Every user error is a SteepError: printed as one clear message, exit code 2, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from steep.config import SteepConfig, find_config, load_config
from steep.errors import SteepError

app = typer.Typer(
    name="steep",
    help="Fine-tune, evaluate, version and serve a summarization model from one steep.yaml.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

ConfigOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--config",
        "-c",
        help="config file (default: ./steep.yaml, else the nearest in a folder above); repeat it to merge "
        "overlays in order, later wins: -c steep.yaml -c tuned.yaml",
        metavar="FILE",
        show_default=False,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="override a config key: section.key=value (repeatable)", show_default=False
    ),
]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"steep {version('steep')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Fine-tune, evaluate, version and serve a summarization model from one steep.yaml."""


def load(config: list[Path] | Path | None, sets: list[str] | None) -> SteepConfig:
    """The resolved config: file (./steep.yaml or the nearest above) and the overlays after it, each `-c`
    merged over the ones before, then STEEP__SECTION__KEY, then --set."""
    files = [config] if isinstance(config, Path) else list(config or [])
    return load_config(files or find_config(), sets)


def quiet_third_parties() -> None:
    """No telemetry, no files in the user's home, no third-party noise: steep.quiet (kept for callers)."""
    from steep.quiet import quiet_third_parties as quiet

    quiet()


def main() -> None:
    """Console-script entry point: typer handles usage errors, a SteepError becomes a clean exit 2."""
    quiet_third_parties()
    try:
        app()
    except SteepError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)  # [a-z] is not markup
        sys.exit(exc.exit_code)
