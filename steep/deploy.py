"""Prefect deployments, the retrain-on-drift trigger and its cool-down, as plain functions.

`prefect.yaml` says what is deployed (flows, schedules, the drift trigger); this module fills its
`{{ steep.* }}` values from the config and the stack, registers the deployments on the stack's Prefect server,
and starts a local worker where the target needs one. The drift flow calls `emit_drift` and `cooldown`.

The cool-down is enforced twice: the trigger itself fires at most once per `drift.cooldown` (a Reactive
Prefect trigger with `within` set to it), and the drift check holds its event while a retrain started within
the cool-down, so its report says so instead of claiming a retrain that will not happen.
"""

from __future__ import annotations

import copy
import importlib
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from steep import quiet
from steep.config import SteepConfig, parse_duration
from steep.errors import SteepError
from steep.registry import model_name

if TYPE_CHECKING:
    from steep.stack.core import Stack

DRIFT_EVENT = "steep.drift.detected"
HELD_EVENT = "steep.drift.held"
FINETUNE = "finetune"  # deployment names as in prefect.yaml
DRIFT_CHECK = "drift-check"
FINETUNE_FLOW = "steep-finetune"
WORKER_SERVICE = "prefect-worker"
PREFECT_YAML = "prefect.yaml"
_PLACEHOLDER = re.compile(r"\{\{\s*steep\.([\w.]+)\s*\}\}")


class DeployError(SteepError):
    """Deployments cannot be registered; the message says what is missing and how to fix it."""


# --------------------------------------------------------------------------------------------- plan
@dataclass
class DeploymentSpec:
    """One deployment of prefect.yaml with every `{{ steep.* }}` value filled in."""

    name: str
    entrypoint: str
    parameters: dict[str, Any] = field(default_factory=dict)
    schedules: list[str] = field(default_factory=list)  # cron strings
    triggers: list[dict[str, Any]] = field(default_factory=list)
    job_variables: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    tags: list[str] = field(default_factory=list)
    concurrency_limit: int | None = None

    def load_flow(self):
        """The flow object, imported by module path so the worker needs no source checkout step."""
        module, _, attr = module_entrypoint(self.entrypoint).partition(":")
        return getattr(importlib.import_module(module), attr)


@dataclass
class DeployPlan:
    target: str
    api_url: str | None
    work_pool: str
    pool_type: str  # "process" | "kubernetes"
    start_worker: bool
    deployments: list[DeploymentSpec]

    def describe(self) -> str:
        """What would be registered, as YAML (the config parameter shortened)."""
        shown = []
        for d in self.deployments:
            params = {
                k: ("<steep.yaml as resolved now>" if k == "cfg" else v) for k, v in d.parameters.items()
            }
            shown.append(
                {
                    "name": d.name,
                    "entrypoint": d.entrypoint,
                    "parameters": params,
                    "schedules": [{"cron": c} for c in d.schedules],
                    "triggers": d.triggers,
                    "job_variables": d.job_variables,
                    **({"concurrency_limit": d.concurrency_limit} if d.concurrency_limit else {}),
                }
            )
        head = {
            "prefect_api": self.api_url or "(none: provision a stack first)",
            "work_pool": {"name": self.work_pool, "type": self.pool_type},
            "worker": "started by steep deploy" if self.start_worker else "runs in the stack",
        }
        return yaml.safe_dump({**head, "deployments": shown}, sort_keys=False, width=110)


def module_entrypoint(entrypoint: str) -> str:
    """'flows/finetune.py:finetune_flow' -> 'flows.finetune:finetune_flow' (module entrypoints pass as is)."""
    path, _, attr = entrypoint.rpartition(":")
    if not path or not attr:
        raise DeployError(f"entrypoint {entrypoint!r}: write path/to/file.py:flow_function")
    if path.endswith(".py"):
        path = path[: -len(".py")].replace("/", ".").replace("\\", ".")
    return f"{path}:{attr}"


def model_resource(cfg: SteepConfig) -> dict[str, str]:
    """The Prefect resource drift events are about: the served model of this project."""
    name = model_name(cfg)
    return {"prefect.resource.id": f"steep.model.{name}", "prefect.resource.name": name}


def work_pool_for(cfg: SteepConfig, stack: Stack | None) -> tuple[str, str]:
    """(name, type): a process pool on the local target, the stack's Kubernetes pool on a cloud."""
    target = stack.target if stack else cfg.stack.target
    if target == "local":
        return f"{cfg.project.name}-process", "process"
    outputs = stack.outputs if stack else {}
    return str(outputs.get("work_pool") or f"{cfg.project.name}-k8s"), "kubernetes"


def job_variables(cfg: SteepConfig, stack: Stack | None, pool_type: str, project_dir: Path) -> dict[str, Any]:
    env = dict(quiet.ENV)
    if pool_type == "process":
        # the worker runs flows where steep.yaml lives, so relative paths (project.home, data) mean the same
        return {"working_dir": str(project_dir), "env": env}
    image = (stack.outputs.get("flow_image") if stack else None) or f"{cfg.project.name}-flows:latest"
    return {"image": str(image), "env": env}


def template_values(cfg: SteepConfig, stack: Stack | None, project_dir: Path) -> dict[str, Any]:
    """What `{{ steep.NAME }}` stands for in prefect.yaml; `steep.drift.*` etc. read the config."""
    pool, pool_type = work_pool_for(cfg, stack)
    return {
        **cfg.model_dump(mode="json"),
        "project_name": cfg.project.name,
        "model_name": model_name(cfg),
        "model_resource": model_resource(cfg)["prefect.resource.id"],
        "work_pool": pool,
        "job_variables": job_variables(cfg, stack, pool_type, project_dir),
        "config": cfg.model_dump(mode="json"),
        "home": str((project_dir / cfg.home).resolve()),
        "cooldown_seconds": int(parse_duration(cfg.drift.cooldown)),
        "drift_event": DRIFT_EVENT,
    }


def _lookup(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise DeployError(
                f"prefect.yaml: unknown placeholder {{{{ steep.{dotted} }}}}; "
                f"known: {', '.join(sorted(k for k in values if not isinstance(values[k], dict)))} "
                "and any steep.yaml key (e.g. steep.drift.schedule)"
            )
        node = node[part]
    return copy.deepcopy(node)


def render(template: Any, values: dict[str, Any]) -> Any:
    """Fill `{{ steep.* }}` (a whole-string one keeps its value's type); other `{{ }}` are Prefect's."""
    if isinstance(template, dict):
        return {k: render(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, values) for v in template]
    if not isinstance(template, str):
        return template
    whole = _PLACEHOLDER.fullmatch(template.strip())
    if whole:
        return _lookup(values, whole.group(1))
    return _PLACEHOLDER.sub(lambda m: str(_lookup(values, m.group(1))), template)


def find_prefect_yaml(project_dir: Path) -> Path:
    """The project's own prefect.yaml when it has one, else the deployment definitions shipped with steep."""
    own = project_dir / PREFECT_YAML
    return own if own.is_file() else Path(str(resources.files("flows") / PREFECT_YAML))


def plan(
    cfg: SteepConfig,
    stack: Stack | None,
    file: Path | None = None,
    project_dir: Path | None = None,
    api_url: str | None = None,
) -> DeployPlan:
    """Read prefect.yaml and fill it for this config and stack; nothing is contacted."""
    project_dir = (project_dir or Path.cwd()).resolve()
    file = file or find_prefect_yaml(project_dir)
    try:
        spec = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DeployError(f"{file}: cannot read it as YAML ({exc})") from exc
    if not isinstance(spec.get("deployments"), list) or not spec["deployments"]:
        raise DeployError(f"{file}: no `deployments:` list")
    target = stack.target if stack else cfg.stack.target
    values = template_values(cfg, stack, project_dir)
    pool, pool_type = work_pool_for(cfg, stack)
    specs = []
    for raw in spec["deployments"]:
        if target not in raw.get("targets", [target]):
            continue
        d = render(raw, values)
        schedules = [s["cron"] for s in d.get("schedules") or [] if s.get("cron")]
        for cron in schedules:
            _check_cron(cron, f"{file}: deployment {d['name']}")
        specs.append(
            DeploymentSpec(
                name=d["name"],
                entrypoint=d["entrypoint"],
                parameters=d.get("parameters") or {},
                schedules=schedules,
                triggers=d.get("triggers") or [],
                job_variables=(d.get("work_pool") or {}).get("job_variables") or {},
                description=d.get("description", ""),
                tags=d.get("tags") or [],
                concurrency_limit=d.get("concurrency_limit"),
            )
        )
    api = api_url or os.environ.get("PREFECT_API_URL") or (stack.prefect_api_url if stack else None)
    return DeployPlan(target, api, pool, pool_type, pool_type == "process", specs)


def _check_cron(cron: str, where: str) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValueError as exc:
        raise DeployError(
            f"{where}: {cron!r} is not a valid cron expression (e.g. '0 * * * *'); fix drift.schedule "
            "or drift.retrain_schedule in steep.yaml"
        ) from exc


# --------------------------------------------------------------------------------------------- apply
def require_server(api_url: str | None) -> str:
    """Deployments live on a Prefect server: the stack's, or the one PREFECT_API_URL names."""
    import httpx

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


# --------------------------------------------------------------------------------------------- worker
def _worker_service(cfg: SteepConfig):
    from steep.stack import daemons
    from steep.stack.core import home_of

    return daemons.Service(WORKER_SERVICE, home_of(cfg), "127.0.0.1", 0)


def worker_pid(cfg: SteepConfig) -> int | None:
    from steep.stack import daemons

    proc = daemons.read_pid(_worker_service(cfg))
    return proc.pid if proc else None


def start_worker(cfg: SteepConfig, api_url: str, pool: str, project_dir: Path, timeout: float = 60.0) -> int:
    """A process worker for the local stack, as a daemon that destroy sweeps (it carries the stack marker)."""
    from steep.stack import daemons

    svc = _worker_service(cfg)
    running = daemons.read_pid(svc)
    if running is not None:
        return running.pid
    (svc.home / "prefect-worker").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({**quiet.ENV, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(svc.home / "prefect-worker")})
    argv = [daemons.bin_path("prefect"), "worker", "start", "--pool", pool, "--type", "process",
            "--name", f"{cfg.project.name}-worker"]  # fmt: skip
    proc = daemons.spawn(svc, argv, env, cwd=project_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if worker_online(pool, api_url):
            return proc.pid
        time.sleep(1.0)
    daemons.stop(svc)
    raise DeployError(
        f"the Prefect worker for pool {pool!r} did not come online; last lines of {svc.log_file}:\n"
        f"{daemons.tail(svc.log_file)}"
    )


def stop_worker(cfg: SteepConfig) -> bool:
    from steep.stack import daemons

    return daemons.stop(_worker_service(cfg))


def worker_online(pool: str, api_url: str) -> bool:
    from prefect import get_client
    from prefect.client.schemas.filters import WorkerFilter, WorkerFilterStatus
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        online = WorkerFilter(status=WorkerFilterStatus(any_=["ONLINE"]))
        return bool(client.read_workers_for_work_pool(pool, worker_filter=online))


# --------------------------------------------------------------------------------------------- trigger
@dataclass(frozen=True)
class Cooldown:
    held: bool
    last: datetime | None
    until: datetime | None
    note: str


def cooldown_state(last: datetime | None, cooldown_s: float, now: datetime | None = None) -> Cooldown:
    """Held while the last retrain (or drift trigger) is less than `cooldown_s` ago."""
    now = now or datetime.now(UTC)
    if last is None:
        return Cooldown(False, None, None, "no retrain within the cool-down")
    until = last + timedelta(seconds=cooldown_s)
    if now < until:
        return Cooldown(True, last, until, f"cool-down: last retrain trigger at {last:%Y-%m-%d %H:%M:%S}Z, "
                        f"next allowed after {until:%Y-%m-%d %H:%M:%S}Z (drift.cooldown)")  # fmt: skip
    return Cooldown(
        False, last, until, f"last retrain trigger at {last:%Y-%m-%d %H:%M:%S}Z, before the cool-down"
    )


def finetune_deployment_id(cfg: SteepConfig) -> str | None:
    """The finetune deployment on the current Prefect API, or None (not deployed, or no server)."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return str(client.read_deployment_by_name(f"{FINETUNE_FLOW}/{FINETUNE}").id)
        except ObjectNotFound:
            return None


def last_retrain(cfg: SteepConfig, since: datetime) -> datetime | None:
    """The latest retrain start or drift trigger after `since`: finetune deployment runs and drift events."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

    times: list[datetime] = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[FINETUNE])),
            flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since)),
            limit=50,
        )
        times += [r.expected_start_time for r in runs if r.expected_start_time]
        page = client.read_events(
            filter=EventFilter(
                occurred=EventOccurredFilter(since=since),
                event=EventNameFilter(name=[DRIFT_EVENT]),
                resource=EventResourceFilter(id=[model_resource(cfg)["prefect.resource.id"]]),
            ),
            limit=50,
        )
        times += [e.occurred for e in page.events]
    return max(times) if times else None


def emit_drift(cfg: SteepConfig, payload: dict[str, Any], held: bool = False) -> str | None:
    """`steep.drift.detected` (the finetune trigger listens) or, in the cool-down, `steep.drift.held`."""
    from prefect.events import emit_event

    event = emit_event(HELD_EVENT if held else DRIFT_EVENT, resource=model_resource(cfg), payload=payload)
    return str(event.id) if event is not None else None
