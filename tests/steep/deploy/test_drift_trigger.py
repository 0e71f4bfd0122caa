"""The cool-down rule and the resource drift events name (emitting them needs a server:
tests/flows/test_drift.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from steep.config import SteepConfig
from steep.deploy.drift_trigger import cooldown_state, model_resource


def test_cooldown_holds_until_it_has_passed():
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert not cooldown_state(None, 3600, now).held
    held = cooldown_state(now - timedelta(minutes=59), 3600, now)
    assert held.held and held.until == now + timedelta(minutes=1) and "next allowed after" in held.note
    assert not cooldown_state(now - timedelta(minutes=61), 3600, now).held


def test_event_resource_names_the_model():
    cfg = SteepConfig.model_validate({"project": {"name": "acme-legal"}})
    assert model_resource(cfg) == {
        "prefect.resource.id": "steep.model.acme-legal-summarizer",
        "prefect.resource.name": "acme-legal-summarizer",
    }
