"""`steep deploy` and the retrain-on-drift trigger, as plain functions.

- `prefect_yaml`: prefect.yaml read and its `{{ steep.* }}` values filled for a config and stack (a plan)
- `register`: a plan's deployments registered on the stack's Prefect server
- `worker`: the local stack's Prefect worker, as a stack daemon
- `drift_trigger`: the drift events the finetune trigger listens to, and the cool-down between retrains

What the CLI, the drift flow and its tests use is re-exported here; the rest is imported from its module.
"""

from steep.deploy.drift_trigger import (
    DRIFT_EVENT,
    FINETUNE,
    HELD_EVENT,
    cooldown_state,
    emit_drift,
    finetune_deployment_id,
    last_retrain,
    model_resource,
)
from steep.deploy.errors import DeployError
from steep.deploy.prefect_yaml import DeployPlan, plan
from steep.deploy.register import apply
from steep.deploy.worker import start_worker

__all__ = [
    "DRIFT_EVENT",
    "FINETUNE",
    "HELD_EVENT",
    "DeployError",
    "DeployPlan",
    "apply",
    "cooldown_state",
    "emit_drift",
    "finetune_deployment_id",
    "last_retrain",
    "model_resource",
    "plan",
    "start_worker",
]
