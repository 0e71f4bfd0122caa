"""`steep tune`: search training and decoding settings on Ray Tune, judged on the validation split; the best
settings become an overlay file (`steep run -c steep.yaml -c tuned.yaml`), never an edit of steep.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from steep.cli.app import ConfigOpt, SetOpt, app, console, load
from steep.config import find_config
from steep.endpoints import Runtime
from steep.errors import SteepError
from steep.registry import METRIC_LABELS


@app.command("tune")
def tune_command(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    trials: Annotated[
        int | None, typer.Option("--trials", help="trials to run (tune.trials)", show_default=False)
    ] = None,
    time_budget: Annotated[
        str | None,
        typer.Option("--time-budget", help="stop the search after this long, e.g. 30m (tune.time_budget)"),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="where to write the best settings (default: tuned.yaml beside steep.yaml)"
        ),
    ] = None,
) -> None:
    """Search hyperparameters (tune.space) on Ray Tune; write the best trial's settings as an overlay."""
    # Ray Tune, MLflow and the training stack load in seconds: only this command needs them
    from steep.pipeline.prepare import ValidationFailed, prepare_splits
    from steep.pipeline.tune import tune

    budget = [f"tune.trials={trials}"] if trials is not None else []
    budget += [f"tune.time_budget={time_budget}"] if time_budget is not None else []
    files = list(config or []) or [find_config()]
    cfg = load(files, [*(sets or []), *budget])
    output = output if output is not None else cfg.root / "tuned.yaml"
    try:
        splits = prepare_splits(cfg).splits
    except ValidationFailed as exc:
        raise SteepError(f"{exc}. Nothing tuned.") from None
    runtime = Runtime.of(cfg)
    t, metric = cfg.tune, METRIC_LABELS[cfg.evaluation.metric]
    where = f"the {runtime.stack.target} stack's Ray" if runtime.stack else "a local Ray"
    console.print(
        f"tuning {escape(cfg.model.source)}: {t.trials} trials within {t.time_budget} on {where}, "
        f"over {', '.join(t.space)}; training on {len(splits.train)} rows, judged on the "
        f"{len(splits.validation)} validation rows ({metric}); the test split is not used",
        soft_wrap=True,
    )
    result = tune(
        cfg,
        splits,
        output=output,
        config_files=files,
        tracking_uri=runtime.tracking_uri,
        ray_address=runtime.ray_address,
        log=lambda line: console.print(escape(line), soft_wrap=True),
    )
    best, defaults = result.best, result.defaults
    versus = ""
    if defaults is not None and defaults.val_score is not None and defaults is not best:
        versus = f" (the defaults, trial {defaults.index}: {defaults.val_score * 100:.2f})"
    console.print(
        f"[green]best[/] trial {best.index}/{result.trials}: validation {metric} "
        f"{(best.val_score or 0) * 100:.2f}{versus}, in {result.seconds:.0f} s; "
        f"MLflow run {result.parent_run_id} ({result.parent_name})",
        soft_wrap=True,
    )
    base, overlay = _shown(files[0]), _shown(result.overlay)
    console.print(
        f"wrote {escape(overlay)} ({len(result.settings)} settings); {escape(base)} is unchanged.\n"
        f"use it:  steep run -c {escape(base)} -c {escape(overlay)}\n"
        f"or:      steep run {escape(' '.join(result.set_lines))}",
        soft_wrap=True,
    )


def _shown(path: Path) -> str:
    """A path as the user would type it here: relative to the working folder when it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
