"""The Ray a pipeline stage runs on: the stack's, one already running here, or a local one started for the
stage and stopped after it. Training, evaluation and `steep tune` all open Ray through `RaySession`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from steep import heartbeat


class RaySession:
    """The Ray a run trains on: the stack's (`ray_address`), one already running here, or a local one.

    `connect()` joins or starts it, only when the run has Ray workers; leaving the `with` block stops a
    Ray that `connect()` started, after the run's outcome is recorded.
    """

    def __init__(self, address: str | None):
        self.address = address
        self.started = False

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            import ray

            ray.shutdown()

    def connect(self) -> list[int]:
        """-> the CPUs of each alive node that offers any (the head of a multi-node cluster offers none)."""
        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if not ray.is_initialized():
            heartbeat.mark_driver()  # if this driver is killed hard, the next look stops what Ray left
            if self.address:
                ray.init(address=self.address, runtime_env=_runtime_env(), log_to_driver=False)
            else:
                tmp = Path(tempfile.gettempdir()) / f"steep-ray-{os.getuid()}"
                ray.init(
                    num_cpus=os.cpu_count(), include_dashboard=False, _temp_dir=str(tmp),
                    runtime_env=_runtime_env(), log_to_driver=False,
                )  # fmt: skip
            self.started = True
        cpus = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]]
        return [c for c in cpus if c > 0] or [1]


def _runtime_env() -> dict[str, Any]:
    """Workers import steep and ray_jobs from the installed package, as the driver does."""
    return {"env_vars": {"TOKENIZERS_PARALLELISM": "false", "RAY_TRAIN_V2_ENABLED": "1"}}
