"""`steep run`: the whole pipeline as one Prefect flow run."""

from __future__ import annotations

import os

from steep.cli.app import ConfigOpt, SetOpt, app, console, load
from steep.cli.data_cmds import print_report


def prefect_env(home: str) -> None:
    """Keep Prefect's state under the steep home, not ~/.prefect."""
    prefect_home = os.path.abspath(os.path.join(home, "prefect"))
    os.makedirs(prefect_home, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", prefect_home)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")


@app.command("run")
def run(config: ConfigOpt = None, sets: SetOpt = None) -> None:
    """Run the pipeline: load -> validate -> split -> train -> evaluate -> gate -> register."""
    cfg = load(config, sets)
    prefect_env(cfg.project.home)
    from flows.finetune import finetune_flow

    outcome = finetune_flow(cfg)
    print_report(outcome.validation)
    sizes = ", ".join(f"{name} {len(part)}" for name, part in outcome.splits.items())
    console.print(f"split (by {cfg.data.group_column or 'row'}): {sizes}")
