"""Registering needs a Prefect server; without one the error says how to get it (tests/flows/test_drift.py
registers on a real server)."""

from __future__ import annotations

import pytest

from steep.deploy import DeployError
from steep.deploy.register import require_server


def test_deploy_without_a_server_says_how_to_get_one():
    with pytest.raises(DeployError, match="steep provision"):
        require_server(None)
    with pytest.raises(DeployError, match="does not answer"):
        require_server("http://127.0.0.1:9/api")
