"""Is each service of the stack answering? One probe per contract endpoint, a couple of seconds each."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import httpx

from steep.stack.contract import Stack


@dataclass
class Health:
    service: str
    url: str
    ok: bool
    detail: str


def _http(service: str, url: str, probe: str, timeout: float) -> Health:
    try:
        code = httpx.get(probe, timeout=timeout).status_code
    except httpx.HTTPError as exc:
        return Health(service, url, False, type(exc).__name__)
    return Health(service, url, code == 200, f"HTTP {code}")


def _tcp(service: str, address: str, timeout: float) -> Health:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return Health(service, address, True, "port open")
    except (OSError, ValueError) as exc:
        return Health(service, address, False, type(exc).__name__)


def check(stack: Stack, timeout: float = 2.0) -> list[Health]:
    """Probe MLflow, Prefect, Ray and serving; serving being down is normal until `steep serve` runs."""
    results = [
        _http("mlflow", stack.mlflow_tracking_uri, f"{stack.mlflow_tracking_uri}/health", timeout),
        _http("prefect", stack.prefect_api_url, f"{stack.prefect_api_url}/health", timeout),
        _tcp("ray", stack.ray_address, timeout),
    ]
    dashboard = stack.output("ray_dashboard_url")
    if dashboard:
        results.append(_http("ray-dashboard", dashboard, f"{dashboard}/api/version", timeout))
    if stack.serving_url.startswith("http"):
        results.append(_http("serving", stack.serving_url, f"{stack.serving_url}/readyz", timeout))
    return results
