"""Provision and destroy as plain functions: preflight checks, Terraform, `.steep/stack.json`.

The CLI and the teardown flow only call these. Every check that can fail runs before `terraform apply`,
and every step of destroy tolerates what a failed apply or an earlier destroy left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from steep.config import SteepConfig, parse_duration
from steep.errors import SteepError
from steep.stack import daemons, prices
from steep.stack import terraform as tf

CONTRACT = ("mlflow_tracking_uri", "artifact_uri", "prefect_api_url", "ray_address", "serving_url", "target",
            "created_at")  # fmt: skip
RAY_INTERNAL = ("ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                "metrics-export-port", "runtime-env-agent-port", "node-manager-port", "object-manager-port",
                "min-worker-port")  # fmt: skip


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

    def env(self) -> dict[str, str]:
        """Environment variables that point MLflow, Prefect and Ray clients at this stack."""
        return {
            "MLFLOW_TRACKING_URI": self.mlflow_tracking_uri,
            "PREFECT_API_URL": self.prefect_api_url,
            "RAY_ADDRESS": self.ray_address,
        }

    def time_left(self, now: datetime | None = None) -> timedelta | None:
        if not self.expires_at:
            return None
        return datetime.fromisoformat(self.expires_at) - (now or datetime.now(UTC))


def home_of(cfg: SteepConfig | Path | str) -> Path:
    return (cfg.home if isinstance(cfg, SteepConfig) else Path(cfg)).resolve()


def stack_file(home: Path) -> Path:
    return home / "stack.json"


def read_record(home: Path) -> dict[str, Any] | None:
    try:
        return json.loads(stack_file(home).read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise StackError(f"{stack_file(home)} is corrupt ({exc}); run `steep destroy` to clean up") from exc


def current(cfg: SteepConfig | Path | str) -> Stack | None:
    """The provisioned stack, or None: callers use the embedded default (sqlite MLflow, ephemeral Prefect)."""
    record = read_record(home_of(cfg))
    if record is None:
        return None
    outputs = record["outputs"]
    return Stack(
        **{k: str(outputs[k]) for k in CONTRACT},
        expires_at=record.get("expires_at"),
        idle_timeout_s=record.get("idle_timeout_s"),
        outputs=outputs,
    )


# --------------------------------------------------------------------------------------------- lock
@contextlib.contextmanager
def locked(home: Path, force_unlock: bool = False) -> Iterator[None]:
    """One provision/destroy at a time per stack home; a lock whose process is gone is reported as stale."""
    home.mkdir(parents=True, exist_ok=True)
    lock = home / "stack.lock"
    if force_unlock:
        lock.unlink(missing_ok=True)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            pid = int(lock.read_text().strip() or 0)
        except (ValueError, FileNotFoundError):
            pid = 0
        if pid and psutil.pid_exists(pid) and pid != os.getpid():
            raise StackError(
                f"another steep provision/destroy (pid {pid}) is working on {home}; wait for it"
            ) from None
        raise StackError(
            f"stale lock {lock} (left by pid {pid or '?'}, which is no longer running); "
            "rerun with --force-unlock to remove it"
        ) from None
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- preflight
_CREDENTIALS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    # target: (any of these env vars, any of these files under $HOME, how to fix)
    "aws": (
        (
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ),
        (".aws/credentials", ".aws/config"),
        "run `aws configure` or set AWS_PROFILE / AWS_ACCESS_KEY_ID",
    ),
    "gcp": (
        ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CREDENTIALS", "CLOUDSDK_AUTH_ACCESS_TOKEN"),
        (".config/gcloud/application_default_credentials.json",),
        "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS",
    ),
    "azure": (
        ("ARM_CLIENT_ID", "ARM_USE_MSI", "ARM_USE_OIDC"),
        (".azure/azureProfile.json",),
        "run `az login` or set ARM_CLIENT_ID, ARM_CLIENT_SECRET, ARM_TENANT_ID and ARM_SUBSCRIPTION_ID",
    ),
}


def check_credentials(
    target: str, environ: dict[str, str] | None = None, user_home: Path | None = None
) -> None:
    """Fail before Terraform when the cloud has no credentials this machine could use."""
    if target == "local":
        return
    environ = os.environ if environ is None else environ
    user_home = user_home or Path.home()
    names, files, fix = _CREDENTIALS[target]
    if any(environ.get(n) for n in names) or any((user_home / f).exists() for f in files):
        return
    raise StackError(
        f"no {target} credentials found (looked for {', '.join(names)} and ~/{', ~/'.join(files)}); {fix}"
    )


def resolve_region(target: str, region: str | None) -> str | None:
    """The region to use (the target's default when unset); an unknown one is refused with close matches."""
    if target == "local":
        return None
    region = region or prices.DEFAULT_REGION[target]
    known = prices.REGIONS[target]
    if region not in known:
        import difflib

        close = difflib.get_close_matches(region, known, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise StackError(
            f"stack.region: {region!r} is not a region of {target}{hint}; known: {', '.join(known)}"
        )
    return region


def local_ports(cfg: SteepConfig) -> dict[str, int]:
    loc = cfg.stack.local
    return {"mlflow": loc.mlflow_port, "prefect": loc.prefect_port, "ray": loc.ray_port,
            "ray_dashboard": loc.ray_dashboard_port, "serving": cfg.serving.port}  # fmt: skip


def check_ports(host: str, ports: dict[str, int], running: set[str]) -> None:
    """Refuse before apply when a port of a service that is not already ours is taken."""
    key = {"serving": "serving.port"}
    for name, port in ports.items():
        if name == "serving" or name.split("_")[0] in running:
            continue
        if not daemons.port_free(host, port):
            field_name = key.get(name, f"stack.local.{name}_port")
            raise StackError(
                f"port {port} on {host} ({name}) is already in use by another program; stop that program or "
                f"set {field_name} to a free port in steep.yaml (or --set {field_name}=PORT)"
            )
    if len(set(ports.values())) != len(ports):
        raise StackError(f"two services share a port: {ports}; give each its own port in steep.yaml")


def running_services(home: Path) -> set[str]:
    return {name for name in daemons.SERVICES if daemons.read_pid(daemons.Service(name, home, "", 0))}


# --------------------------------------------------------------------------------------------- variables
def terraform_variables(cfg: SteepConfig, target: str, created_at: str, region: str | None) -> dict[str, Any]:
    """The variables of terraform/<target>, from steep.yaml."""
    home = home_of(cfg)
    base: dict[str, Any] = {"stack_name": cfg.project.name, "created_at": created_at}
    if target == "local":
        old = read_vars(home, target)
        internal = old.get("ray_internal_ports") or {}
        if set(internal) != set(RAY_INTERNAL) or (
            any(not daemons.port_free(cfg.stack.local.host, p) for p in internal.values())
            and "ray" not in running_services(home)
        ):
            ports = daemons.free_ports(len(RAY_INTERNAL), cfg.stack.local.host, local_ports(cfg).values())
            internal = dict(zip(RAY_INTERNAL, ports, strict=True))
        return {**base, "home": str(home), "python": sys.executable, "host": cfg.stack.local.host,
                "ports": local_ports(cfg), "ray_internal_ports": internal,
                "start_timeout": int(parse_duration(cfg.stack.local.start_timeout))}  # fmt: skip
    s = cfg.stack
    d = prices.DEFAULTS[target]
    return {**base, "region": region, "cpu_nodes": s.cpu_nodes, "gpu_nodes": s.gpu_nodes, "gpu_spot": s.spot,
            "cpu_instance_type": s.cpu_instance_type or d["cpu"],
            "gpu_instance_type": s.gpu_instance_type or d["gpu"]}  # fmt: skip


def read_vars(home: Path, target: str) -> dict[str, Any]:
    try:
        return json.loads((home / "terraform" / target / tf.VARS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def runner(home: Path, target: str, log: Callable[[str], None] | None = None, sync: bool = True) -> tf.Runner:
    """A Terraform runner on the stack's working copy of terraform/<target> (synced from the repo)."""
    tf_home = home / "terraform"
    rc = tf.prepare_mirror(tf_home)
    workdir = tf.sync_sources(target, tf_home) if sync else tf_home / target
    return tf.Runner(workdir, rc, log)


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def write_record(home: Path, outputs: dict[str, Any], ttl_s: float | None, idle_s: float | None) -> None:
    missing = [k for k in CONTRACT if k not in outputs]
    if missing:
        raise StackError(
            f"terraform/{outputs.get('target')} does not export {', '.join(missing)} (stack contract)"
        )
    created = datetime.fromisoformat(str(outputs["created_at"]))
    record = {
        "outputs": outputs,
        "provisioned_at": now_iso(),
        "expires_at": (datetime.now(UTC) + timedelta(seconds=ttl_s)).replace(microsecond=0).isoformat()
        if ttl_s
        else None,
        "idle_timeout_s": idle_s,
        "created_at": created.isoformat(),
    }
    tmp = stack_file(home).with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(stack_file(home))


# --------------------------------------------------------------------------------------------- destroy steps
def provisioned_targets(home: Path) -> list[str]:
    """Targets with something in their state: the recorded one, and any a failed apply left behind."""
    found = []
    record = read_record(home)
    if record:
        found.append(record["outputs"]["target"])
    for target in tf.TARGETS:
        state = home / "terraform" / target / "terraform.tfstate"
        if target not in found and state.exists():
            try:
                resources = json.loads(state.read_text()).get("resources", [])
            except ValueError:
                resources = [True]
            if resources or (home / "terraform" / target / tf.VARS_FILE).exists():
                found.append(target)
    return found


def stop_serving(home: Path) -> bool:
    """Stop `steep serve` if it runs from this home (pid file run/serving.pid) and the watchdog."""
    stopped = False
    for name in ("serving", "watchdog"):
        svc = daemons.Service(name, home, "127.0.0.1", 0)
        proc = daemons.read_pid(svc)
        if proc is not None and proc.pid == os.getpid():
            continue  # the watchdog tearing the stack down does not stop itself
        stopped |= daemons.stop(svc, grace=10.0)
    return stopped


def terraform_destroy(home: Path, target: str, log: Callable[[str], None] | None = None) -> None:
    """`terraform destroy` from the working copy; init first when a failed provision never got that far."""
    workdir = home / "terraform" / target
    if not (workdir / "main.tf").exists():
        return
    run = runner(home, target, log, sync=False)
    if not (workdir / ".terraform").exists():
        run.init()
    run.destroy()


def verify_empty(home: Path, target: str) -> list[str]:
    """What is left: state addresses and, for local, live processes of the stack (after a last sweep)."""
    left = []
    workdir = home / "terraform" / target
    if (workdir / "main.tf").exists():
        left += runner(home, target, sync=False).resources()
    if target == "local":
        daemons.sweep(home)
        left += [f"process {p.pid} ({' '.join(p.cmdline()[:3])})" for p in daemons.stack_processes(home)]
    return left


def remove_record(home: Path) -> bool:
    existed = stack_file(home).exists()
    stack_file(home).unlink(missing_ok=True)
    for target in tf.TARGETS:
        (home / "terraform" / target / tf.VARS_FILE).unlink(missing_ok=True)
        (home / "terraform" / target / tf.PLAN_FILE).unlink(missing_ok=True)
    return existed


# --------------------------------------------------------------------------------------------- provision
_BACKENDS = {"aws": "s3", "gcp": "gcs", "azure": "azurerm"}


def write_backend(workdir: Path, target: str, backend_config: dict[str, str]) -> None:
    """With stack.backend_config, state goes to the cloud's bucket (S3+DynamoDB, GCS, Blob lease lock)."""
    file = workdir / "steep_backend.tf"
    if not backend_config:
        file.unlink(missing_ok=True)
        return
    if target == "local":
        raise StackError(
            "stack.backend_config: the local target keeps its state under project.home; remove it"
        )
    if target == "aws" and "dynamodb_table" not in backend_config:
        raise StackError("stack.backend_config: add dynamodb_table so the S3 state is locked")
    file.write_text(f'terraform {{\n  backend "{_BACKENDS[target]}" {{}}\n}}\n')


def provision(
    cfg: SteepConfig,
    target: str | None = None,
    *,
    ttl: str | None = None,
    budget: float | None = None,
    confirm: Callable[[str], bool] = lambda text: True,
    echo: Callable[[str], None] = print,
    force_unlock: bool = False,
) -> Stack:
    """Check, plan, show plan and cost, confirm, apply, record the outputs, arm the TTL/idle watchdog."""
    from steep.stack import cost, lifecycle

    target = target or cfg.stack.target
    if target not in tf.TARGETS:
        raise StackError(f"unknown target {target!r}; choose one of: {', '.join(tf.TARGETS)}")
    home = home_of(cfg)
    ttl = ttl if ttl is not None else cfg.stack.ttl
    try:
        ttl_s = parse_duration(ttl) if ttl else None
    except ValueError as exc:
        raise StackError(f"--ttl: {exc}") from None
    budget = budget if budget is not None else cfg.stack.budget_usd_per_hour
    region = resolve_region(target, cfg.stack.region)
    est = cost.estimate(target, cfg.stack)
    cost.check_budget(est, budget)
    check_credentials(target)
    with locked(home, force_unlock):
        record = read_record(home)
        if record and record["outputs"]["target"] != target:
            raise StackError(
                f"a {record['outputs']['target']} stack is provisioned; "
                f"`steep destroy` it before provisioning {target}"
            )
        created_at = record["outputs"]["created_at"] if record else now_iso()
        replace = []
        if target == "local":
            running = running_services(home)
            check_ports(cfg.stack.local.host, local_ports(cfg), running)
            state = read_vars(home, target)
            replace = [
                f'null_resource.service["{s}"]' for s in daemons.SERVICES if state and s not in running
            ]
        run = runner(home, target, echo)
        write_backend(run.workdir, target, cfg.stack.backend_config)
        run.write_vars(terraform_variables(cfg, target, created_at, region))
        echo(f"terraform init ({target})")
        run.init(cfg.stack.backend_config)
        plan = run.plan(replace=[r for r in replace if r in run.resources()])
        summary = f"plan: {plan}\n" + "\n".join(f"  {r}" for r in plan.resources)
        summary += f"\nestimated cost:\n{est.table()}"
        if budget is not None:
            summary += f"\nbudget: ${budget:.2f}/hour"
        if not confirm(summary):
            raise StackError("provision cancelled; nothing was changed")
        try:
            run.apply()
        except tf.TerraformError as exc:
            raise StackError(
                f"{exc}\nthe stack is partly created; fix the cause and rerun `steep provision`, "
                "or clean up with `steep destroy`"
            ) from exc
        outputs = run.outputs()
        idle_s = parse_duration(cfg.stack.idle_timeout) if cfg.stack.idle_timeout else None
        write_record(home, outputs, ttl_s, idle_s)
        if ttl_s or idle_s:
            lifecycle.spawn_watchdog(home, parse_duration(cfg.stack.idle_check_interval))
    stack = current(home)
    assert stack is not None
    return stack


def destroy_steps(home: Path, log: Callable[[str], None] | None = None) -> list[str]:
    """The teardown without Prefect (the flow runs the same steps as tasks); returns the targets destroyed."""
    targets = provisioned_targets(home)
    stop_serving(home)
    for target in targets:
        terraform_destroy(home, target, log)
        left = verify_empty(home, target)
        if left:
            raise StackError(f"{target}: destroy left {', '.join(left)}; rerun `steep destroy`")
    remove_record(home)
    return targets
