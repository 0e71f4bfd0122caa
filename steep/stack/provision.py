"""`steep provision` as a plain function: preflight, plan, show plan and cost, confirm, apply, record.

Every check that can fail runs before `terraform apply`; an apply that fails half-way leaves state that
`steep destroy` (steep.stack.teardown) finds and removes.
"""

from __future__ import annotations

from collections.abc import Callable

from steep.config import SteepConfig, parse_duration
from steep.stack import cost, daemons, lifecycle, preflight
from steep.stack import terraform as tf
from steep.stack.backend import write_backend
from steep.stack.contract import Stack, StackError
from steep.stack.lock import locked
from steep.stack.record import current, home_of, now_iso, read_record, write_record
from steep.stack.variables import local_ports, read_vars, terraform_variables


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
    """Check, plan, show plan and cost, confirm, apply, record the outputs, arm the watchdog (TTL, idle,
    lost local Ray nodes)."""
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
    region = preflight.resolve_region(target, cfg.stack.region)
    est = cost.estimate(target, cfg.stack)
    cost.check_budget(est, budget)
    preflight.check_credentials(target)
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
            running = daemons.running(home)
            preflight.check_ports(cfg.stack.local.host, local_ports(cfg), running)
            state = read_vars(home, target)
            replace = [
                f'null_resource.service["{s}"]' for s in daemons.SERVICES if state and s not in running
            ]
            # a worker node that died (or was killed) is started again; only those in the state are replaced
            nodes = daemons.ray_worker_names(cfg.stack.local.ray_worker_nodes)
            up = daemons.running(home, nodes)
            replace += [f"null_resource.ray_worker[{i}]" for i, n in enumerate(nodes) if n not in up]
        run = tf.working_copy(home, target, echo)
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
        replaces_nodes = target == "local" and cfg.stack.local.ray_worker_nodes > 0  # lost ones come back
        if ttl_s or idle_s or replaces_nodes:
            lifecycle.spawn_watchdog(home, parse_duration(cfg.stack.idle_check_interval))
    stack = current(home)
    assert stack is not None
    return stack
