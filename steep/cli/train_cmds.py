"""`steep train`: validate and split the data, fine-tune on Ray Train, record the run in MLflow."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from steep.cli.app import ConfigOpt, SetOpt, app, console, load
from steep.errors import SteepError
from steep.runtime import Runtime


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
    from steep.data import load_dataset, split_dataset
    from steep.pipeline.training import train
    from steep.validation import validate_frame

    cfg = load(config, sets)
    started = time.perf_counter()
    dataset = load_dataset(cfg)
    report = validate_frame(dataset.frame, cfg)
    if not report.passed:
        failed = ", ".join(r.name for r in report.failures)
        raise SteepError(
            f"the training data failed validation ({failed}); see `steep validate`. Nothing trained."
        )
    frame = report.clean if report.clean is not None else dataset.frame
    splits = split_dataset(frame, cfg.data.split, cfg.project.seed)
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
