"""`steep` command-line interface; each module below registers the commands of one area."""

from steep.cli import config_cmds, data_cmds, run_cmds  # noqa: F401  (registers commands)
from steep.cli.app import app, main

__all__ = ["app", "main"]
