"""A DeployPlan registered on the stack's Prefect server: the work pool, then each deployment.

Prefect is imported inside the functions: it reads its settings once, at import, and `steep deploy` sets
them (`Runtime.use_prefect`) after importing this module.
"""

from __future__ import annotations

from typing import Any

import httpx

from steep.deploy.errors import DeployError
from steep.deploy.prefect_yaml import DeployPlan


def require_server(api_url: str | None) -> str:
    """Deployments live on a Prefect server: the stack's, or the one PREFECT_API_URL names."""
    if not api_url:
        raise DeployError(
            "no Prefect server: deployments, schedules and triggers need one. "
            "Run `steep provision` first (or set PREFECT_API_URL to a running server)"
        )
    try:
        ok = httpx.get(f"{api_url.rstrip('/')}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        ok = False
    if not ok:
        raise DeployError(f"the Prefect server at {api_url} does not answer; `steep status` shows the stack")
    return api_url


def ensure_work_pool(name: str, pool_type: str) -> None:
    """Create the process pool when missing; a Kubernetes pool is the stack's worker's to create."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            if pool_type != "process":
                raise DeployError(
                    f"work pool {name!r} does not exist yet; the stack's Prefect worker creates it when it "
                    "starts. Check it with `kubectl get pods` in the platform namespace, then rerun"
                ) from None
            from prefect.workers.process import ProcessWorker

            template = ProcessWorker.get_default_base_job_template()
            client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
            return
    if pool.type != pool_type:
        raise DeployError(
            f"work pool {name!r} exists with type {pool.type}, not {pool_type}; delete or rename it"
        )


def apply(deploy_plan: DeployPlan) -> dict[str, str]:
    """Register every deployment (create or update, triggers replaced); -> {name: deployment id}."""
    from prefect.deployments.runner import EntrypointType
    from prefect.events import DeploymentTriggerTypes
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from pydantic import TypeAdapter

    api_url = require_server(deploy_plan.api_url)
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        return _apply(deploy_plan, TypeAdapter(DeploymentTriggerTypes), EntrypointType.MODULE_PATH)


def _apply(deploy_plan: DeployPlan, adapter: Any, entrypoint_type: Any) -> dict[str, str]:
    ensure_work_pool(deploy_plan.work_pool, deploy_plan.pool_type)
    ids = {}
    for spec in deploy_plan.deployments:
        flow = spec.load_flow()
        triggers = [adapter.validate_python(t) for t in spec.triggers]
        deployment = flow.to_deployment(
            name=spec.name,
            cron=spec.schedules or None,
            parameters=spec.parameters,
            triggers=triggers,
            description=spec.description or None,
            tags=spec.tags,
            work_pool_name=deploy_plan.work_pool,
            job_variables=spec.job_variables,
            concurrency_limit=spec.concurrency_limit,
            entrypoint_type=entrypoint_type,
        )
        if not spec.schedules:
            deployment.schedules = []  # an update must drop a schedule the config no longer has
        ids[f"{flow.name}/{spec.name}"] = str(deployment.apply(work_pool_name=deploy_plan.work_pool))
    return ids
