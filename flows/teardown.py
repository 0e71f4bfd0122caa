"""The teardown flow: stop serving, `terraform destroy`, verify nothing is left, forget the stack.

Orchestration only: each task is one plain function of steep.stack.core, so `steep destroy`, the TTL/idle
watchdog and a scheduled deployment all tear down the same way, with each step visible in the Prefect UI.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task

from steep.stack import core


@task(name="stop-serving")
def stop_serving(home: str) -> bool:
    return core.stop_serving(Path(home))


@task(name="terraform-destroy", retries=1, retry_delay_seconds=3)
def terraform_destroy(home: str, target: str) -> None:
    core.terraform_destroy(Path(home), target, get_run_logger().info)


@task(name="verify-empty")
def verify_empty(home: str, target: str) -> None:
    left = core.verify_empty(Path(home), target)
    if left:
        raise core.StackError(f"{target}: destroy left {', '.join(left)}; rerun `steep destroy`")


@task(name="remove-stack-record")
def remove_record(home: str) -> bool:
    return core.remove_record(Path(home))


@flow(name="teardown", log_prints=True)
def teardown(home: str = ".steep", reason: str = "requested", force_unlock: bool = False) -> list[str]:
    """Destroy every target with state under `home`; idempotent (a second run finds nothing to do)."""
    root = Path(home).resolve()
    logger = get_run_logger()
    with core.locked(root, force_unlock):
        targets = core.provisioned_targets(root)
        logger.info("teardown (%s): %s", reason, ", ".join(targets) or "nothing provisioned")
        stop_serving(str(root))
        for target in targets:
            terraform_destroy(str(root), target)
            verify_empty(str(root), target)
        remove_record(str(root))
    return targets
