"""`steep drift check | simulate`: run the drift check by hand, and send shifted traffic to watch it fire."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from steep.cli.app import ConfigOpt, SetOpt, app, console, load
from steep.drift import traffic
from steep.endpoints import Runtime
from steep.serving.auth import api_key

drift_app = typer.Typer(
    help="Drift monitoring: check the inference window, simulate shifted traffic.", no_args_is_help=True
)
app.add_typer(drift_app, name="drift")


@drift_app.command("check")
def check(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    emit: Annotated[
        bool, typer.Option("--emit/--no-emit", help="over threshold, emit the retrain event (default)")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Compare the recent inference window with the champion's training data; log the report to MLflow."""
    cfg = load(config, sets)
    Runtime.of(cfg).use_prefect()
    # Prefect reads its settings once, when imported: only after use_prefect()
    from steep.flows.drift import drift_check_flow

    report = drift_check_flow(cfg, emit=emit)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2, default=str))
        return
    colour = {"drift": "red", "ok": "green"}.get(report.status, "yellow")
    console.print(
        f"drift check: [{colour}]{report.status}[/] ({report.window_rows} rows in {cfg.drift.window})"
    )
    if report.metrics:
        table = Table()
        for col in ("metric", "value", "threshold", "in force", ""):
            table.add_column(col, justify="left" if col == "metric" else "right")
        limits = report.limits
        for key, value in report.metrics.items():
            over = value > limits[key]
            table.add_row(key, f"{value:.3f}", f"{report.thresholds[key]:.3f}", f"{limits[key]:.3f}",
                          "[red]over[/]" if over else "")  # fmt: skip
        console.print(table)
    for reason in report.reasons:
        console.print(f"  {reason}")
    ctx = report.context
    if ctx.get("reference"):
        console.print(f"reference: {ctx['reference']}")
    if ctx.get("event"):
        console.print(f"event: {ctx['event']} ({ctx.get('cooldown')})")
        if ctx["event"] == "steep.drift.detected" and not ctx.get("finetune_deployed"):
            console.print(
                "[yellow]no finetune deployment on this Prefect server: `steep deploy` to retrain on drift[/]"
            )
    console.print(f"MLflow drift report: run {ctx.get('drift_run_id')} (experiment {cfg.project.name}-drift)")


@drift_app.command("simulate")
def simulate(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    shift: Annotated[
        str,
        typer.Option(help="domain (clinical notes), noise (garbled, longer texts) or none (in-distribution)"),
    ] = "domain",
    rows: Annotated[
        int | None, typer.Option(help="texts to send (default: 2 x drift.min_window_rows)")
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="summarizer URL (default: the stack's or serving.port)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed for the generated texts")] = 0,
) -> None:
    """Send shifted inputs through the running server, so the next drift check has something to find."""
    cfg = load(config, sets)
    count = rows or 2 * cfg.drift.min_window_rows
    base: list[str] = []
    if shift in ("none", "noise"):  # texts of the test split; GX (for its validation) loads in seconds
        from steep.pipeline.drift_check import configured_splits

        base = list(configured_splits(cfg).test["text"])
    texts = traffic.shifted_texts(base, count, shift=shift, seed=seed)
    texts = [t[: cfg.serving.max_text_chars] for t in texts]
    key = api_key(cfg.serving)  # None when serving.api_key_env is unset
    target = url or traffic.serving_url(cfg)
    with console.status(f"sending {len(texts)} {shift} texts to {target} ..."):
        sent = traffic.send_texts(target, texts, cfg.serving.max_texts, api_key=key)
    versions = ", ".join(sorted(sent.versions)) or "?"
    console.print(
        f"sent {sent.texts} texts in {sent.requests} requests to {target} (model version {versions})"
    )
    console.print("now run `steep drift check` (or wait for the drift-check deployment's schedule)")
