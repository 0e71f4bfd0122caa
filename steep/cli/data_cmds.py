"""`steep validate` and `steep data seed | show`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from steep.cli.app import ConfigOpt, SetOpt, app, console, load
from steep.data import load_dataset, seed_cache
from steep.validation import ValidationReport

data_app = typer.Typer(help="Look at and prepare the training data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

_STYLE = {"pass": "green", "dropped": "yellow", "warn": "yellow", "fail": "bold red"}


def print_report(report: ValidationReport) -> None:
    table = Table(title=f"training data: {report.rows_in} rows, policy on_bad_rows={report.policy}")
    table.add_column("rule", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for col in ("bad rows", "observed", "examples"):
        table.add_column(col, overflow="fold")
    for r in report.results:
        observed = (
            ""
            if r.observed is None or isinstance(r.observed, list)
            else f"{r.observed:.3g}"
            if isinstance(r.observed, float)
            else str(r.observed)
        )
        table.add_row(
            r.name,
            f"[{_STYLE[r.status]}]{r.status}[/]",
            f"{r.unexpected_count}/{r.element_count}" if r.row_level else "",
            observed,
            ", ".join(r.sample_ids),
        )
    console.print(table)
    if report.dropped:
        n = sum(len(v) for v in report.dropped.values())
        console.print(f"dropped {n} bad rows; {report.rows_out} rows remain")
    if report.data_docs:
        console.print(f"Data Docs: {report.data_docs.resolve()}")
    verdict = (
        "[green]passed[/]"
        if report.passed
        else "[bold red]failed[/]: " + ", ".join(r.name for r in report.failures)
    )
    console.print(f"validation {verdict}")


@app.command("validate")
def validate(config: ConfigOpt = None, sets: SetOpt = None) -> None:
    """Check the training data with Great Expectations; exit 1 when it fails."""
    from steep.pipeline.prepare import validate_dataset  # GX loads in seconds: not on every `steep` start-up

    cfg = load(config, sets)
    report = validate_dataset(cfg, load_dataset(cfg))
    print_report(report)
    if not report.passed:
        raise typer.Exit(1)


@data_app.command("seed")
def seed(
    file: Annotated[Path, typer.Argument(help="a local copy of the file data.source points at")],
    if_present: Annotated[
        bool, typer.Option("--if-present", help="do nothing (exit 0) when FILE does not exist")
    ] = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Put a local copy of a URL source into the cache (for offline machines); the checksum is verified."""
    if if_present and not file.exists():
        console.print(f"{file} not present; nothing seeded (steep downloads data.source when it runs)")
        return
    dest = seed_cache(load(config, sets), file)
    console.print(f"[green]seeded[/] {dest}")


@data_app.command("show")
def show(config: ConfigOpt = None, sets: SetOpt = None) -> None:
    """Rows, groups and digests of the data and of each split (as `steep run` splits and tags them)."""
    from steep.pipeline.prepare import prepare_splits  # GX loads in seconds: not on every `steep` start-up

    prepared = prepare_splits(load(config, sets))
    dataset, splits = prepared.dataset, prepared.splits
    table = Table(title=f"{dataset.source}")
    for col in ("part", "rows", "groups", "digest"):
        table.add_column(col)
    table.add_row("all", str(len(dataset.frame)), str(dataset.frame["group"].nunique()), dataset.digest[:16])
    for name, part in splits.items():
        table.add_row(name, str(len(part)), str(part["group"].nunique()), splits.digests[name][:16])
    console.print(table)
    report = prepared.report
    if report.rows_out != report.rows_in:
        console.print(
            f"the splits hold the {report.rows_out} rows that pass validation "
            f"({report.rows_in - report.rows_out} dropped; `steep validate` shows which)"
        )
