"""`steep run`: the whole pipeline as one Prefect flow run, and where to look afterwards."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from steep.cli.app import ConfigOpt, SetOpt, app, console, load
from steep.data import load_dataset
from steep.endpoints import Runtime
from steep.pipeline import run_ledger
from steep.registry import METRIC_LABELS, METRICS

if TYPE_CHECKING:  # the evaluation stage imports nltk: seconds every command would pay at start-up
    from steep.config import SteepConfig
    from steep.scoring.scores import Evaluation
    from steep.significance import Interval


@app.command("run")
def run(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="continue the last failed or killed `steep run` (or FLOW_RUN_ID) from its first unfinished "
            "stage, with the same config and data",
        ),
    ] = False,
    flow_run_id: Annotated[
        str | None, typer.Argument(metavar="[FLOW_RUN_ID]", help="with --resume: the run to continue")
    ] = None,
) -> None:
    """Run the pipeline: validate -> split -> train -> evaluate -> gate -> register -> promote -> package."""
    cfg = load(config, sets)
    if flow_run_id and not resume:
        raise typer.BadParameter(f"a flow run id is for --resume: `steep run --resume {flow_run_id}`")
    run_ledger.check_free(cfg)  # another run of this project: refused before anything starts
    resumed = _to_resume(cfg, flow_run_id) if resume else None
    Runtime.of(cfg).use_prefect()
    # Prefect reads its settings once, when imported: only after use_prefect()
    from steep.flows.finetune import finetune_flow

    outcome = finetune_flow(cfg, resume=resumed)
    test = outcome.splits.test
    console.print(
        results_table(
            outcome.evaluations,
            f"test split: {len(test)} rows, {test['group'].nunique()} documents never seen in training",
        )
    )
    decision = outcome.decision
    verdict = "[green]promoted to champion[/]" if outcome.promoted else "[yellow]not promoted[/]"
    console.print(f"version {outcome.version}: {verdict} — {decision.summary() if decision else ''}")
    if outcome.approval is not None:
        console.print(f"approval: {outcome.approval}")
    package = outcome.package
    if package and package.bento:
        console.print(f"Bento:      {package.bento}  (`steep serve` answers with it)")
    elif package:
        console.print(
            f"[yellow]warning:[/] the bento was not built; the promotion stands. Retry: `{package.retry}`\n"
            f"  {package.error}"
        )
    console.print(f"MLflow run: {outcome.run_id}  ({outcome.tracking_uri or 'embedded: ' + str(cfg.home)})")
    if outcome.resumed_from:
        console.print(f"resumed from {outcome.resumed_from}: the stages before it were not run again")
    console.print(f"Data Docs:  {outcome.validation.data_docs}")


def _to_resume(cfg: SteepConfig, flow_run_id: str | None) -> str:
    """The run to continue (the one named, else the latest), checked against this config and data before
    anything starts."""
    ledger = run_ledger.to_resume(cfg, flow_run_id)
    run_ledger.check_unchanged(ledger, cfg, load_dataset(cfg).digest)
    console.print(
        f"resuming `steep run` {ledger.flow_run_id} ({ledger.status}) from {ledger.first_unfinished()}"
    )
    return ledger.flow_run_id


def results_table(evaluations: Sequence[Evaluation], title: str) -> Table:
    """Each model's scores, and beside every other model the challenger's lead over it with its paired
    bootstrap interval: `+3.1 [+1.2, +5.0]` is 3.1 points ahead, and sure of 1.2 to 5.0 at that level."""
    challenger = next((ev for ev in evaluations if ev.role == "challenger"), None)
    versus = challenger.versus if challenger is not None else {}
    some = next((iv for by_metric in versus.values() for iv in by_metric.values()), None)
    table = Table(title=title, caption=_caption(some) if some else None)
    for col in ("model", *METRIC_LABELS.values(), "length ratio"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for ev in evaluations:
        mine = versus.get(ev.key) if ev is not challenger else None
        cells = []
        for metric in METRICS:
            cell = f"{getattr(ev.scores, metric) * 100:.2f}"
            if mine is not None:
                iv = mine[metric]
                cell += f"  [{_color(iv)}]{escape(iv.format())}[/]"
            cells.append(cell)
        table.add_row(ev.name, *cells, f"{ev.scores.length_ratio:.2f}")
    return table


def _caption(iv: Interval) -> str:
    unit = "documents" if iv.units < iv.n else "rows"
    return (
        f"+d \\[low, high]: the challenger minus that model (F1 x 100) and its {iv.confidence:.0%} paired "
        f"bootstrap interval, {iv.units} {unit} resampled"
    )


def _color(iv: Interval) -> str:
    """Green: surely ahead; red: surely behind; no colour: the interval holds zero."""
    return "green" if iv.defined and iv.low > 0 else "red" if iv.defined and iv.high < 0 else "default"
