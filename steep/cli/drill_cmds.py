"""`steep drill preempt | lose`: rehearse, on the local stack, what a cloud does to a spot node."""

from __future__ import annotations

from typing import Annotated

import typer

from steep.cli.app import ConfigOpt, SetOpt, app, console, load
from steep.config import parse_duration
from steep.stack import drill
from steep.stack.record import home_of

drill_app = typer.Typer(
    help="Rehearse a spot reclaim on the local stack (stack.local.ray_worker_nodes >= 2).",
    no_args_is_help=True,
)
app.add_typer(drill_app, name="drill")

NodeOpt = Annotated[
    str | None,
    typer.Option(
        "--node", help="the worker node, e.g. ray-worker-2 (default: one running a training worker)"
    ),
]


@drill_app.command("preempt")
def preempt(
    node: NodeOpt = None,
    grace: Annotated[
        str, typer.Option("--grace", help="the notice: 30s as on GCP, 2m as on AWS, 30s as on Azure")
    ] = "30s",
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Announce a spot reclaim of a worker node (Ray's drain, reason PREEMPTION, with a deadline), then take
    the node away when the deadline passes. A training run checkpoints on the notice and goes on elsewhere."""
    home = home_of(load(config, sets))
    done = drill.preempt(home, node, int(parse_duration(grace)), echo=console.print)
    console.print(f"reclaim of {done.node}: notice {done.deadline - done.noticed_at:.0f} s ahead, done")


@drill_app.command("lose")
def lose(node: NodeOpt = None, config: ConfigOpt = None, sets: SetOpt = None) -> None:
    """Take a worker node away at once, with no notice (a crash): the contrast to `preempt`."""
    home = home_of(load(config, sets))
    done = drill.lose(home, node, echo=console.print)
    console.print(f"{done.node} lost with no notice")
