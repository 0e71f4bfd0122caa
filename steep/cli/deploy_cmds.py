"""`steep deploy`: register prefect.yaml's deployments (schedules, drift trigger) on the stack's Prefect."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from steep import deploy
from steep.cli.app import ConfigOpt, SetOpt, app, console, load
from steep.endpoints import Runtime


@app.command("deploy")
def deploy_cmd(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print what would be registered, change nothing")
    ] = False,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="prefect.yaml to use (default: the project's own, else the one shipped with steep)",
        ),
    ] = None,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="start a local worker where the target needs one")
    ] = True,
) -> None:
    """Register the finetune, drift-check and teardown deployments; start a local worker."""
    cfg = load(config, sets)
    runtime = Runtime.of(cfg)
    if not dry_run:
        runtime.use_prefect()  # before Prefect is imported: its settings are read once
    # the record: flow runs on a cloud's pool get its in-cluster addresses; this machine reaches the API
    # through PREFECT_API_URL, which use_prefect() pointed at the forwarded one
    plan = deploy.plan(cfg, runtime.record, file, project_dir=cfg.root)
    if dry_run:
        typer.echo(plan.describe())
        return
    ids = deploy.apply(plan)
    for name, deployment_id in ids.items():
        console.print(f"registered {name} ({deployment_id})")
    if plan.start_worker and worker:
        pid = deploy.start_worker(cfg, plan.api_url, plan.work_pool, cfg.root)
        console.print(f"worker for pool {plan.work_pool} running (pid {pid}); `steep destroy` stops it")
    elif plan.start_worker:
        console.print(
            f"no worker started: run `prefect worker start --pool {plan.work_pool}` to execute runs"
        )
    console.print(f"Prefect UI: {plan.api_url.removesuffix('/api')}")
