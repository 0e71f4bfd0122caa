"""TTL and idle teardown decisions, and the activity signals they read."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from steep.stack import lifecycle
from steep.stack.contract import Stack


def _stack(expires_in: float | None, idle_s: float | None, url: str = "http://127.0.0.1:9") -> Stack:
    now = datetime.now(UTC)
    return Stack(
        target="local", mlflow_tracking_uri=url, artifact_uri="file:///a", prefect_api_url=f"{url}/api",
        ray_address="127.0.0.1:9", serving_url=url, created_at=now.isoformat(),
        expires_at=(now + timedelta(seconds=expires_in)).isoformat() if expires_in is not None else None,
        idle_timeout_s=idle_s,
    )  # fmt: skip


def test_ttl_and_idle_decide_teardown() -> None:
    now = time.time()
    assert lifecycle.due(_stack(60, None), now, now) is None
    assert "TTL expired" in lifecycle.due(_stack(-1, None), now, now)
    assert lifecycle.due(_stack(None, 600), now, now - 599) is None
    assert "idle for 600s" in lifecycle.due(_stack(None, 600), now, now - 600)
    assert lifecycle.due(_stack(None, None), now, 0) is None


def test_without_training_or_traffic_the_stack_goes_idle(tmp_path: Path) -> None:
    tracker = lifecycle.IdleTracker(tmp_path, _stack(None, 100))
    assert tracker.check(time.time()) is None  # just provisioned
    tracker.last = time.time() - 1000
    assert "idle" in tracker.check(time.time())


class _Metrics(BaseHTTPRequestHandler):
    count = 0

    def do_GET(self) -> None:
        body = (
            f'bentoml_service_request_total{{endpoint="/summarize",http_response_code="200"}} {self.count}\n'
            f'bentoml_service_request_total{{endpoint="/readyz",http_response_code="200"}} {7 + self.count}\n'
        )
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


def test_serving_traffic_counts_as_activity(tmp_path: Path) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert lifecycle.serving_requests(url) == 0  # health probes are not traffic
        tracker = lifecycle.IdleTracker(tmp_path, _stack(None, 100, url))
        tracker.last = time.time() - 1000
        assert tracker.check(time.time()) is not None  # first look: no change seen yet
        _Metrics.count = 3
        assert tracker.check(time.time()) is None
    finally:
        server.shutdown()
    assert lifecycle.serving_requests("http://127.0.0.1:9") is None
