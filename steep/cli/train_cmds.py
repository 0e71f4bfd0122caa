"""`steep train`: validate and split the data, fine-tune on Ray Train, record the run in MLflow."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from steep.cli.app import ConfigOpt, SetOpt, app, console, load
from steep.endpoints import Runtime
from steep.errors import SteepError


@app.command("train")
def train_command(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="continue the latest run (or --run-name) from its last checkpoint"),
    ] = False,
    run_name: Annotated[
        str | None, typer.Option("--run-name", help="name the run (or pick the run to resume)")
    ] = None,
) -> None:
    """Fine-tune the configured model on the validated training split (Ray Train; MLflow tracking)."""
    # GX, MLflow and Ray load in seconds: only this command needs them, not every `steep` start-up
    from steep.pipeline.prepare import ValidationFailed, prepare_splits
    from steep.pipeline.training import train

    cfg = load(config, sets)
    started = time.perf_counter()
    try:
        splits = prepare_splits(cfg).splits
    except ValidationFailed as exc:
        raise SteepError(f"{exc}. Nothing trained.") from None
    runtime = Runtime.of(cfg)
    where = f"stack {runtime.stack.target}" if runtime.stack else "local Ray, MLflow under " + str(cfg.home)
    console.print(
        f"training {cfg.model.source} ({cfg.training.method}) on {len(splits.train)} rows, "
        f"{cfg.training.workers} worker(s); {where}"
    )
    result = train(
        cfg,
        splits,
        tracking_uri=runtime.tracking_uri,
        ray_address=runtime.ray_address,
        resume=resume,
        run_name=run_name,
        progress=True,
    )
    m = result.metrics
    console.print(
        f"[green]done[/] run {result.run_name} ({result.run_id}) in {time.perf_counter() - started:.0f} s: "
        f"{m['steps']:.0f} steps, loss {m['loss_first']:.3f} -> {m['loss_last']:.3f}, "
        f"{m['tokens_per_s']:,.0f} tokens/s"
    )
    console.print(f"model: {result.model_uri}\ncheckpoint: {result.checkpoint_path}")
