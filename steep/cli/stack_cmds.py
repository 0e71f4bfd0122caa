"""`steep provision | destroy | status | get`: the stack over Terraform (see steep/stack)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from steep.cli.app import ConfigOpt, SetOpt, app, console, load
from steep.endpoints import Runtime
from steep.stack import health, lifecycle, teardown
from steep.stack.contract import Stack, StackError
from steep.stack.port_forward import reachable
from steep.stack.provision import provision as provision_stack
from steep.stack.record import current, home_of, provisioned_targets, stack_file
from steep.stack.terraform import TARGETS

YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")]
UnlockOpt = Annotated[
    bool, typer.Option("--force-unlock", help="remove a stale lock left by a provision/destroy that died")
]


@app.command()
def provision(
    target: Annotated[
        str | None,
        typer.Option("--target", "-t", help=f"one of {', '.join(TARGETS)} (default: stack.target)"),
    ] = None,
    yes: YesOpt = False,
    ttl: Annotated[
        str | None, typer.Option(help="tear down after this long, e.g. 4h (default: stack.ttl)")
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option("--budget", help="refuse above this many USD per hour (stack.budget_usd_per_hour)"),
    ] = None,
    force_unlock: UnlockOpt = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Create the stack with Terraform: shows the plan and the cost estimate, then asks."""
    cfg = load(config, sets)

    def confirm(summary: str) -> bool:
        console.print(summary, markup=False)
        return yes or typer.confirm("apply?", default=False)

    stack = provision_stack(
        cfg, target, ttl=ttl, budget=budget, confirm=confirm, echo=lambda s: console.print(s, markup=False),
        force_unlock=force_unlock,
    )  # fmt: skip
    console.print(f"[green]provisioned[/] {stack.target} stack; outputs in {stack_file(home_of(cfg))}")
    _print_outputs(stack)


@app.command()
def destroy(
    yes: YesOpt = False, force_unlock: UnlockOpt = False, config: ConfigOpt = None, sets: SetOpt = None
) -> None:
    """Tear the stack down (teardown flow): stop serving, terraform destroy, verify empty, forget it."""
    cfg = load(config, sets)
    home = home_of(cfg)
    targets = provisioned_targets(home)
    if not targets and not stack_file(home).exists():
        served = teardown.stop_serving(home)  # a `steep serve` of this project goes with the stack
        stopped = "stopped this project's `steep serve`; " if served else ""
        console.print(f"{stopped}nothing to destroy: no stack is provisioned", markup=False)
        return
    if not yes and not typer.confirm(f"destroy the {', '.join(targets)} stack under {home}?", default=False):
        raise typer.Exit(1)
    Runtime.of(cfg).use_prefect(stack_api=False)  # the teardown destroys the stack's own server
    # Prefect takes seconds to import and reads its settings once, after use_prefect: only destroy needs it.
    from steep.flows import teardown as teardown_flow

    problem = teardown_flow.api_problem()
    if problem is None:
        done = teardown_flow.teardown(home=str(home), reason="steep destroy", force_unlock=force_unlock)
    else:
        # Destroying must not depend on the orchestrator: run the same steps without it.
        console.print(f"[yellow]Prefect could not start ({problem}); tearing down without it[/]")
        done = teardown.run(
            home,
            reason="steep destroy",
            log=lambda line: console.print(line, markup=False),
            force_unlock=force_unlock,
        )
    console.print(f"[green]destroyed[/] {', '.join(done) or 'nothing'}; no resource and no process left")


@app.command()
def status(config: ConfigOpt = None, sets: SetOpt = None) -> None:
    """What is provisioned, whether each service answers, and how long until the TTL/idle teardown."""
    cfg = load(config, sets)
    stack = current(cfg)
    if stack is None:
        left = provisioned_targets(home_of(cfg))
        note = f" (but state for {', '.join(left)} remains: run `steep destroy`)" if left else ""
        console.print(f"no stack provisioned{note}; `steep run` uses the embedded default")
        return
    console.print(f"target [bold]{stack.target}[/], created {stack.created_at}")
    left = stack.time_left()
    if left is not None:
        console.print(f"TTL: expires {stack.expires_at} ({_fmt(left.total_seconds())} left)")
    if stack.idle_timeout_s:
        console.print(f"idle teardown after {_fmt(stack.idle_timeout_s)} without training or serving")
    pid = lifecycle.watchdog_pid(home_of(cfg))
    if left is not None or stack.idle_timeout_s:
        console.print(f"watchdog: {'running (pid ' + str(pid) + ')' if pid else '[red]not running[/]'}")
    for h in health.check(reachable(stack, kube_context=cfg.stack.kube_context, region=cfg.stack.region)):
        mark = "[green]healthy[/]" if h.ok else "[red]down[/]"
        console.print(f"  {h.service:<14} {mark:<22} {h.url}  ({h.detail})")


@app.command()
def get(
    output: Annotated[str | None, typer.Argument(help="one output name; all when omitted")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Print the stack's outputs (the contract), e.g. `steep get mlflow_tracking_uri`."""
    stack = current(load(config, sets))
    if stack is None:
        raise StackError("no stack provisioned; run `steep provision` first")
    if output is None:
        typer.echo(json.dumps(stack.outputs, indent=2)) if as_json else _print_outputs(stack)
        return
    if output not in stack.outputs:
        raise StackError(f"no output {output!r}; available: {', '.join(sorted(stack.outputs))}")
    value = stack.outputs[output]
    typer.echo(json.dumps(value) if as_json else value)


def _print_outputs(stack: Stack) -> None:
    for key in sorted(stack.outputs):
        typer.echo(f"{key} = {stack.outputs[key]}")


def _fmt(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
