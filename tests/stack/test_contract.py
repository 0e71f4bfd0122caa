"""The contract object: how clients reach the stack, and how long it has left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from steep.stack.contract import Stack


def _stack(expires_at: str | None) -> Stack:
    return Stack(target="local", mlflow_tracking_uri="http://m", artifact_uri="file:///a",
                 prefect_api_url="http://p/api", ray_address="127.0.0.1:6379", serving_url="http://s",
                 created_at="2026-01-01T00:00:00+00:00", expires_at=expires_at)  # fmt: skip


def test_env_points_the_clients_at_the_stack() -> None:
    assert _stack(None).env() == {
        "MLFLOW_TRACKING_URI": "http://m",
        "PREFECT_API_URL": "http://p/api",
        "RAY_ADDRESS": "127.0.0.1:6379",
    }


def test_time_left_counts_down_to_the_ttl() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert _stack(None).time_left(now) is None
    assert _stack((now + timedelta(hours=2)).isoformat()).time_left(now) == timedelta(hours=2)
    assert _stack((now - timedelta(seconds=5)).isoformat()).time_left(now) == timedelta(seconds=-5)
