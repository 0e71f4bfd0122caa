"""The stack contract: what the rest of steep sees of a provisioned stack, whatever the target.

Every target's Terraform exports the CONTRACT outputs; callers read them through `Stack` and never look at
Terraform or the record file themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from steep.errors import SteepError

CONTRACT = ("mlflow_tracking_uri", "artifact_uri", "prefect_api_url", "ray_address", "serving_url", "target",
            "created_at")  # fmt: skip
# also exported by every target, with the same meaning; null where a target has no such thing
EXTRAS = (
    "ray_dashboard_url",  # the Ray dashboard (and job API)
    "work_pool",  # the Prefect work pool flow runs go to: a process pool locally, Kubernetes on a cloud
    "namespace",  # the Kubernetes namespace the model is served from (none on the local target)
)
OUTPUTS = CONTRACT + EXTRAS  # every output steep reads; tests/stack/test_contract.py checks both ways


class StackError(SteepError):
    """A provision/destroy problem the user can fix."""


@dataclass(frozen=True)
class Stack:
    """The stack contract: what callers need to reach the provisioned services, whatever the target."""

    target: str
    mlflow_tracking_uri: str
    artifact_uri: str
    prefect_api_url: str
    ray_address: str
    serving_url: str
    created_at: str
    expires_at: str | None = None
    idle_timeout_s: float | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    reach: dict[str, Any] = field(default_factory=dict)  # how this machine gets to them (stack.port_forward)

    def env(self) -> dict[str, str]:
        """Environment variables that point MLflow, Prefect and Ray clients at this stack."""
        return {
            "MLFLOW_TRACKING_URI": self.mlflow_tracking_uri,
            "PREFECT_API_URL": self.prefect_api_url,
            "RAY_ADDRESS": self.ray_address,
        }

    def output(self, name: str) -> Any:
        """One output of the contract (None where this target has none); names outside it are a bug."""
        if name not in OUTPUTS:
            raise KeyError(f"{name!r} is not a stack output steep reads (steep.stack.contract.OUTPUTS)")
        return self.outputs.get(name)

    def time_left(self, now: datetime | None = None) -> timedelta | None:
        """Until the TTL teardown; None when the stack has no TTL."""
        if not self.expires_at:
            return None
        return datetime.fromisoformat(self.expires_at) - (now or datetime.now(UTC))
