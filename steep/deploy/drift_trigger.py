"""The retrain-on-drift trigger: the events the drift check emits, and the cool-down between retrains.

The cool-down is enforced twice: the finetune deployment's trigger fires at most once per `drift.cooldown`
(a Reactive Prefect trigger with `within` set to it), and the drift check holds its event while a retrain
started within the cool-down, so its report says so instead of claiming a retrain that will not happen.

Prefect is imported inside the functions: it reads its settings once, at import, and the callers set them
first (`Runtime.use_prefect`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from steep.config import SteepConfig
from steep.registry import model_name

DRIFT_EVENT = "steep.drift.detected"  # the finetune deployment's trigger listens for it
HELD_EVENT = "steep.drift.held"  # drift, but within the cool-down: recorded, starts nothing
FINETUNE = "finetune"  # the deployment the trigger starts, and its flow, as in prefect.yaml
FINETUNE_FLOW = "steep-finetune"


def model_resource(cfg: SteepConfig) -> dict[str, str]:
    """The Prefect resource drift events are about: the served model of this project."""
    name = model_name(cfg)
    return {"prefect.resource.id": f"steep.model.{name}", "prefect.resource.name": name}


@dataclass(frozen=True)
class Cooldown:
    held: bool
    last: datetime | None
    until: datetime | None
    note: str


def cooldown_state(last: datetime | None, cooldown_s: float, now: datetime | None = None) -> Cooldown:
    """Held while the last retrain (or drift trigger) is less than `cooldown_s` ago."""
    now = now or datetime.now(UTC)
    if last is None:
        return Cooldown(False, None, None, "no retrain within the cool-down")
    until = last + timedelta(seconds=cooldown_s)
    if now < until:
        return Cooldown(True, last, until, f"cool-down: last retrain trigger at {last:%Y-%m-%d %H:%M:%S}Z, "
                        f"next allowed after {until:%Y-%m-%d %H:%M:%S}Z (drift.cooldown)")  # fmt: skip
    return Cooldown(
        False, last, until, f"last retrain trigger at {last:%Y-%m-%d %H:%M:%S}Z, before the cool-down"
    )


def finetune_deployment_id(cfg: SteepConfig) -> str | None:
    """The finetune deployment on the current Prefect API, or None (not deployed, or no server)."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return str(client.read_deployment_by_name(f"{FINETUNE_FLOW}/{FINETUNE}").id)
        except ObjectNotFound:
            return None


def last_retrain(cfg: SteepConfig, since: datetime) -> datetime | None:
    """The latest retrain start or drift trigger after `since`: finetune deployment runs and drift events."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

    times: list[datetime] = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[FINETUNE])),
            flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since)),
            limit=50,
        )
        times += [r.expected_start_time for r in runs if r.expected_start_time]
        page = client.read_events(
            filter=EventFilter(
                occurred=EventOccurredFilter(since=since),
                event=EventNameFilter(name=[DRIFT_EVENT]),
                resource=EventResourceFilter(id=[model_resource(cfg)["prefect.resource.id"]]),
            ),
            limit=50,
        )
        times += [e.occurred for e in page.events]
    return max(times) if times else None


def emit_drift(cfg: SteepConfig, payload: dict[str, Any], held: bool = False) -> str | None:
    """`steep.drift.detected` (the finetune trigger listens) or, in the cool-down, `steep.drift.held`."""
    from prefect.events import emit_event

    event = emit_event(HELD_EVENT if held else DRIFT_EVENT, resource=model_resource(cfg), payload=payload)
    return str(event.id) if event is not None else None
