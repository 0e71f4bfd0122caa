"""`steep` command-line interface; each module below registers the commands of one area."""

from steep.cli import (  # noqa: F401  (each module registers its commands)
    config_cmds,
    data_cmds,
    deploy_cmds,
    drift_cmds,
    drill_cmds,
    init_cmds,
    models_cmds,
    run_cmds,
    serve_cmds,
    stack_cmds,
    train_cmds,
    tune_cmds,
)
from steep.cli.app import app, main

__all__ = ["app", "main"]
