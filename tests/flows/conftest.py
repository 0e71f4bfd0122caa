"""Shared by the flow tests: each module keeps to its own MLflow store."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module", autouse=True)
def own_mlflow_store():
    """The projects here use their own MLflow stores. mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI,
    which Runtime reads as a container's setting, so the store of an earlier module would leak in."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved
