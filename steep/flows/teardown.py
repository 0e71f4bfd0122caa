"""The teardown flow: the stack layer's teardown sequence with each step a Prefect task.

Orchestration only: the steps, their order and what they do are steep.stack.teardown, so `steep destroy`,
the TTL/idle watchdog (which runs them without Prefect) and a scheduled deployment tear down the same way,
here with each step visible in the Prefect UI.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client

from steep.stack import teardown as sequence


@task(cache_policy=NO_CACHE, retry_delay_seconds=3)
def _step(step: sequence.Step) -> object:
    return step.action(get_run_logger().info)


def as_task(step: sequence.Step) -> object:
    """The sequence's hook: one task per step, named after it, retried as often as the step allows."""
    return _step.with_options(name=step.name, task_run_name=step.title, retries=step.retries)(step)


@flow(name="teardown", log_prints=True)
def teardown(home: str = ".steep", reason: str = "requested", force_unlock: bool = False) -> list[str]:
    """Destroy every target with state under `home`; idempotent (a second run finds nothing to do)."""
    root = Path(home).resolve()
    log = get_run_logger().info
    return sequence.run(root, reason=reason, log=log, hook=as_task, force_unlock=force_unlock)


def api_problem() -> str | None:
    """Why Prefect's API cannot be reached, or None; with no API set, this starts the temporary one."""
    try:
        with get_client(sync_client=True) as client:
            error = client.api_healthcheck()
    except (RuntimeError, ValueError, OSError, httpx.HTTPError) as exc:
        return str(exc) or type(exc).__name__
    return None if error is None else str(error) or type(error).__name__
