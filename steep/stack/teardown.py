"""The one teardown sequence: stop serving, `terraform destroy` and verify each target, forget, sweep.

`steep destroy`, the TTL/idle watchdog and the Prefect teardown flow all call `run`; they differ only in
the hook that runs each step (directly, or as a Prefect task). Every step tolerates what a failed apply or
an earlier destroy left behind, so the sequence can be rerun until it succeeds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from steep.stack import daemons
from steep.stack import terraform as tf
from steep.stack.contract import StackError
from steep.stack.lock import locked
from steep.stack.record import provisioned_targets, remove_record

Log = Callable[[str], None]


def _silent(line: str) -> None:
    """The default log: Terraform's progress lines go nowhere."""


@dataclass(frozen=True)
class Step:
    """One named step; `action(log)` does it, `log` receiving its progress lines."""

    name: str
    action: Callable[[Log], object]
    target: str | None = None
    retries: int = 0  # how often a wrapper may rerun it after a failure (safe for terraform destroy)

    @property
    def title(self) -> str:
        return f"{self.name} ({self.target})" if self.target else self.name


Hook = Callable[[Step], object]
"""Runs one step in place of the plain `step.action(log)`: to wrap it (a Prefect task) or report it."""


def stop_serving(home: Path) -> bool:
    """Stop `steep serve` if it runs from this home (pid file run/serving.pid) and the watchdog."""
    stopped = False
    for name in (daemons.SERVING, "watchdog"):
        svc = daemons.Service(name, home, "127.0.0.1", 0)
        proc = daemons.read_pid(svc)
        if proc is not None and proc.pid == os.getpid():
            continue  # the watchdog tearing the stack down does not stop itself
        stopped |= daemons.stop(svc, grace=10.0)
    return stopped


def terraform_destroy(home: Path, target: str, log: Log = _silent) -> None:
    """`terraform destroy` from the working copy; init first when a failed provision never got that far."""
    workdir = home / "terraform" / target
    if not (workdir / "main.tf").exists():
        return
    run = tf.working_copy(home, target, log, sync=False)
    if not (workdir / ".terraform").exists():
        run.init()
    run.destroy()


def verify_empty(home: Path, target: str) -> None:
    """Fail naming what is left: state addresses and, for local, live processes (after a last sweep)."""
    left = []
    if (home / "terraform" / target / "main.tf").exists():
        left += tf.working_copy(home, target, sync=False).resources()
    if target == "local":
        daemons.sweep(home)
        left += [f"process {p.pid} ({' '.join(p.cmdline()[:3])})" for p in daemons.stack_processes(home)]
    if left:
        raise StackError(f"{target}: destroy left {', '.join(left)}; rerun `steep destroy`")


def steps(home: Path, targets: list[str]) -> list[Step]:
    """The teardown of `targets` under `home`, in order."""
    sequence = [Step("stop-serving", lambda log: stop_serving(home))]
    for target in targets:
        sequence += [
            Step("terraform-destroy", partial(terraform_destroy, home, target), target, retries=1),
            Step("verify-empty", lambda log, target=target: verify_empty(home, target), target),
        ]
    sequence += [
        Step("remove-stack-record", lambda log: remove_record(home)),
        Step("sweep-processes", lambda log: daemons.sweep(home)),
    ]
    return sequence


def run(
    home: Path,
    *,
    reason: str = "requested",
    log: Log = _silent,
    hook: Hook | None = None,
    force_unlock: bool = False,
) -> list[str]:
    """Tear down every target with state under `home`, under the stack lock; returns the targets destroyed.

    Idempotent: a second run finds nothing left to do. `hook` runs each step (default: call
    it with `log`); a step that raises stops the sequence, leaving the record for the next attempt.
    """
    with locked(home, force_unlock):
        targets = provisioned_targets(home)
        log(f"teardown ({reason}): {', '.join(targets) or 'nothing provisioned'}")
        for step in steps(home, targets):
            if hook is None:
                step.action(log)
            else:
                hook(step)
    return targets
