"""prefect.yaml read and filled: its `{{ steep.* }}` values from the config and the stack, as a DeployPlan.

`prefect.yaml` says what is deployed (flows, schedules, the drift trigger); this module fills it for one
config and stack and contacts nothing, so `steep deploy --dry-run` shows exactly what would be registered.
"""

from __future__ import annotations

import copy
import importlib
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from steep import quiet
from steep.config import SteepConfig, parse_duration
from steep.deploy.drift_trigger import DRIFT_EVENT, model_resource
from steep.deploy.errors import DeployError
from steep.inference_log import STORE_ENV, inference_store
from steep.registry import model_name
from steep.stack import Stack

PREFECT_YAML = "prefect.yaml"
_PLACEHOLDER = re.compile(r"\{\{\s*steep\.([\w.]+)\s*\}\}")


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

    def load_flow(self) -> Any:
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
    """'steep/flows/finetune.py:finetune_flow' -> 'steep.flows.finetune:finetune_flow'; modules pass as is."""
    path, _, attr = entrypoint.rpartition(":")
    if not path or not attr:
        raise DeployError(f"entrypoint {entrypoint!r}: write path/to/file.py:flow_function")
    if path.endswith(".py"):
        path = path[: -len(".py")].replace("/", ".").replace("\\", ".")
    return f"{path}:{attr}"


def work_pool_for(cfg: SteepConfig, stack: Stack | None) -> tuple[str, str]:
    """(name, type): a process pool on the local target, the stack's Kubernetes pool on a cloud."""
    target = stack.target if stack else cfg.stack.target
    kind = "process" if target == "local" else "kubernetes"
    pool = stack.output("work_pool") if stack else None
    return str(pool or f"{cfg.project.name}-{'process' if kind == 'process' else 'k8s'}"), kind


def job_variables(cfg: SteepConfig, stack: Stack | None, pool_type: str, project_dir: Path) -> dict[str, Any]:
    """Where and how a flow run executes: the project folder for a process pool, the flow image on a cloud."""
    env = dict(quiet.ENV)
    if pool_type == "process":
        # the worker runs flows where steep.yaml lives, so relative paths (project.home, data) mean the same
        return {"working_dir": str(project_dir), "env": env}
    if stack is not None:  # a flow run in a pod: the stack's in-cluster tracking server and log store
        env["MLFLOW_TRACKING_URI"] = stack.mlflow_tracking_uri
        store = inference_store(cfg, stack)
        if store:
            env[STORE_ENV] = store
    return {"image": cfg.stack.flow_image or f"{cfg.project.name}-flows:latest", "env": env}


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
    return own if own.is_file() else Path(str(resources.files("steep.flows") / PREFECT_YAML))


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
    # Prefect inside: it reads its settings once, at import, and `steep deploy` sets them after this module
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValueError as exc:
        raise DeployError(
            f"{where}: {cron!r} is not a valid cron expression (e.g. '0 * * * *'); fix drift.schedule "
            "or drift.retrain_schedule in steep.yaml"
        ) from exc
