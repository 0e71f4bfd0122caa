"""The teardown flow: the stack layer's sequence with each step a Prefect task; and the API probe.

Prefect is imported inside the tests, not at collection: it reads its settings once, when first imported,
and other tests set them (PREFECT_HOME) before that.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from steep.stack import CONTRACT, current
from steep.stack.daemons import free_port
from steep.stack.record import write_record


@pytest.fixture
def prefect_home(tmp_path: Path) -> Iterator[None]:
    """Prefect's settings change through its own context, since it has read the environment already."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    with temporary_settings(
        updates={PREFECT_HOME: tmp_path / "prefect", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 180},
        restore_defaults={PREFECT_API_URL},
    ):
        yield


def test_an_unreachable_api_is_reported_not_raised(prefect_home) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from steep.flows import teardown as teardown_flow

    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        problem = teardown_flow.api_problem()
    assert problem is not None and problem.strip()


@pytest.mark.integration
def test_each_step_is_a_task_and_the_stack_is_forgotten(prefect_home, tmp_path: Path) -> None:
    from prefect import get_client

    from steep.flows import teardown as teardown_flow

    home = (tmp_path / ".steep").resolve()
    home.mkdir()
    outputs = {k: "x" for k in CONTRACT} | {"target": "local", "created_at": "2026-01-01T00:00:00+00:00"}
    write_record(home, outputs, None, None)
    assert teardown_flow.api_problem() is None  # starts the temporary API the flow then uses
    assert teardown_flow.teardown(home=str(home), reason="test") == ["local"]
    assert current(home) is None
    with get_client(sync_client=True) as client:
        names = {run.name for run in client.read_task_runs()}
    assert {"stop-serving", "terraform-destroy (local)", "verify-empty (local)", "remove-stack-record",
            "sweep-processes"} <= names  # fmt: skip
    assert teardown_flow.teardown(home=str(home)) == []
