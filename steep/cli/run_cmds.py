"""`steep run`: the whole pipeline as one Prefect flow run, and where to look afterwards."""

from __future__ import annotations

from rich.table import Table

from steep.cli.app import ConfigOpt, SetOpt, app, console, load
from steep.runtime import Runtime


@app.command("run")
def run(config: ConfigOpt = None, sets: SetOpt = None) -> None:
    """Run the pipeline: validate -> split -> train -> evaluate -> gate -> register -> promote -> package."""
    cfg = load(config, sets)
    Runtime.of(cfg).use_prefect()
    # Prefect reads its settings once, when imported: only after use_prefect()
    from flows.finetune import finetune_flow

    outcome = finetune_flow(cfg)
    table = Table(
        title=f"test split: {len(outcome.splits.test)} rows, {len(outcome.splits.test['group'].unique())} "
        f"documents never seen in training"
    )
    for col in ("model", "ROUGE-1", "ROUGE-2", "ROUGE-L", "length ratio"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for ev in outcome.evaluations:
        s = ev.scores
        table.add_row(
            ev.name, *(f"{v * 100:.2f}" for v in (s.rouge1, s.rouge2, s.rougeL)), f"{s.length_ratio:.2f}"
        )
    console.print(table)
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
    console.print(f"Data Docs:  {outcome.validation.data_docs}")
