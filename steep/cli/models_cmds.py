"""`steep models list | promote | rollback | approve`: the registry by hand."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from steep.cli.app import ConfigOpt, SetOpt, app, console, load
from steep.endpoints import Runtime
from steep.registry import CHALLENGER, CHAMPION, METRIC_LABELS, Registry
from steep.significance import DEFAULT_CONFIDENCE, Interval

models_app = typer.Typer(
    help="The model registry: versions, champion, rollback, approvals.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


def local_time(epoch_ms: int | None) -> str:
    """MLflow's creation timestamp (epoch milliseconds) as a local date and time: 2026-11-30 08:26."""
    if epoch_ms is None:
        return ""
    return datetime.fromtimestamp(epoch_ms / 1000).strftime("%Y-%m-%d %H:%M")


@models_app.command("list")
def list_versions(config: ConfigOpt = None, sets: SetOpt = None) -> None:
    """Every version with its aliases, gate result and scores."""
    cfg = load(config, sets)
    registry = Runtime.of(cfg).registry()
    versions = registry.versions()
    if not versions:
        console.print(f"no versions of {registry.name} yet: `steep run` registers one")
        return
    champion, challenger = registry.alias(CHAMPION), registry.alias(CHALLENGER)
    metric = cfg.evaluation.metric
    label = METRIC_LABELS[metric]
    table = Table(
        title=registry.name,
        caption=f"Δ: {label} minus the champion's it was gated against (or the base model's) and Lead-1's, "
        "F1 x 100, with its paired bootstrap interval",
    )
    for col in ("version", "aliases", "ROUGE-L", "Δ vs champion", "Δ vs lead-1", "gate", "run", "created"):
        table.add_column(col)
    for v in reversed(versions):
        aliases = [
            a for a, mv in ((CHAMPION, champion), (CHALLENGER, challenger)) if mv and mv.version == v.version
        ]
        scores = json.loads(v.tags.get("steep.eval.challenger", "{}"))
        rouge = f"{scores['rougeL'] * 100:.2f}" if "rougeL" in scores else ""
        gate = (
            "pass"
            if v.tags.get("steep.gate_passed") == "true"
            else "fail"
            if "steep.gate_passed" in v.tags
            else ""
        )
        created = local_time(v.creation_timestamp)
        deltas = run_metrics(registry, v.run_id)
        ahead = delta_cell(deltas, "champion", metric) or delta_cell(deltas, "base", metric, " (base)")
        table.add_row(
            str(v.version),
            ", ".join(aliases),
            rouge,
            ahead,
            delta_cell(deltas, "lead1", metric),
            gate,
            (v.run_id or "")[:12],
            created,
        )
    console.print(table)


def run_metrics(registry: Registry, run_id: str | None) -> dict[str, float]:
    """The metrics of the run a version came from; none when the run is gone or was never recorded."""
    if not run_id:
        return {}
    from mlflow.exceptions import MlflowException  # late: the CLI starts without mlflow

    try:
        return dict(registry.client.get_run(run_id).data.metrics)
    except MlflowException:
        return {}


def delta_cell(metrics: dict[str, float], other: str, metric: str, note: str = "") -> str:
    """`+3.1 [+1.2, +5.0]` from `delta_<other>_<metric>` and its `_low`/`_high` (F1 x 100); a version
    evaluated before intervals were logged shows nothing."""
    name = f"delta_{other}_{metric}"
    if name not in metrics:
        return ""
    low, high = metrics.get(f"{name}_low", math.nan), metrics.get(f"{name}_high", math.nan)
    level = metrics.get("delta_confidence", DEFAULT_CONFIDENCE)
    return escape(Interval(metrics[name], low, high, level, 0, 0).format()) + note


@models_app.command("promote")
def promote(
    version: Annotated[str, typer.Argument(help="the version to make champion")],
    reason: Annotated[str, typer.Option(help="recorded on the version")] = "promoted by hand",
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Make VERSION the champion (what `steep serve` answers with)."""
    registry = Runtime.of(load(config, sets)).registry()
    registry.promote(version, reason)
    console.print(f"[green]champion[/] is now {registry.name} v{version}")


@models_app.command("rollback")
def rollback(config: ConfigOpt = None, sets: SetOpt = None) -> None:
    """Move the champion back to the version it replaced."""
    registry = Runtime.of(load(config, sets)).registry()
    was, now = registry.rollback()
    console.print(f"[green]rolled back[/] {registry.name}: champion v{was} -> v{now}")


@models_app.command("approve")
def approve(
    flow_run_id: Annotated[str, typer.Argument(help="the paused `steep run` flow run")],
    reject: Annotated[bool, typer.Option("--reject", help="reject instead of approve")] = False,
    comment: Annotated[str, typer.Option(help="recorded on the model version")] = "",
    reviewer: Annotated[str, typer.Option(help="who decided")] = "",
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Answer a run waiting for approval (evaluation.require_approval); the Prefect UI shows the same form."""
    from prefect.flow_runs import resume_flow_run

    Runtime.of(load(config, sets)).use_prefect()
    resume_flow_run(flow_run_id, run_input={"approve": not reject, "comment": comment, "reviewer": reviewer})
    console.print(f"{'rejected' if reject else 'approved'}: flow run {flow_run_id} resumes")
