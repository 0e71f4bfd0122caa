"""The teardown sequence: its steps in order, run through a hook, rerunnable after a failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steep.stack import daemons, teardown
from steep.stack import terraform as tf
from steep.stack.contract import CONTRACT, StackError
from steep.stack.record import current, stack_file, write_record

ALWAYS = ["stop-serving", "remove-stack-record", "sweep-processes"]


def _record(home: Path, target: str = "local") -> None:
    home.mkdir(parents=True, exist_ok=True)
    outputs = {k: "x" for k in CONTRACT} | {"target": target, "created_at": "2026-01-01T00:00:00+00:00"}
    write_record(home, outputs, None, None)


def _recorder(titles: list[str], fail_at: str | None = None) -> teardown.Hook:
    def hook(step: teardown.Step) -> object:
        titles.append(step.title)
        if step.title == fail_at:
            raise StackError(f"{step.title} failed")
        return step.action(lambda line: None)

    return hook


def test_steps_run_in_order_through_the_hook_and_a_rerun_finds_nothing(stack_home: Path) -> None:
    _record(stack_home)
    titles: list[str] = []
    lines: list[str] = []
    assert teardown.run(stack_home, reason="test", log=lines.append, hook=_recorder(titles)) == ["local"]
    assert titles == [
        "stop-serving", "terraform-destroy (local)", "verify-empty (local)", "remove-stack-record",
        "sweep-processes",
    ]  # fmt: skip
    assert lines == ["teardown (test): local"]
    assert current(stack_home) is None and not (stack_home / "stack.lock").exists()
    titles.clear()
    assert teardown.run(stack_home, hook=_recorder(titles)) == []
    assert titles == ALWAYS


def test_without_a_hook_each_step_is_called_with_the_log(stack_home: Path) -> None:
    _record(stack_home, "gcp")
    lines: list[str] = []
    assert teardown.run(stack_home, log=lines.append) == ["gcp"]
    assert lines == ["teardown (requested): gcp"] and current(stack_home) is None


def test_a_failed_step_stops_the_sequence_and_keeps_the_record_for_a_rerun(stack_home: Path) -> None:
    _record(stack_home)
    titles: list[str] = []
    with pytest.raises(StackError, match="terraform-destroy"):
        teardown.run(stack_home, hook=_recorder(titles, fail_at="terraform-destroy (local)"))
    assert titles == ["stop-serving", "terraform-destroy (local)"]
    assert stack_file(stack_home).exists() and not (stack_home / "stack.lock").exists()
    assert teardown.run(stack_home) == ["local"] and current(stack_home) is None


def test_only_terraform_destroy_may_be_retried(stack_home: Path) -> None:
    retried = {s.name for s in teardown.steps(stack_home, ["local", "aws"]) if s.retries}
    assert retried == {"terraform-destroy"}
    titles = [s.title for s in teardown.steps(stack_home, ["local", "aws"])]
    assert titles[1:5] == [
        "terraform-destroy (local)",
        "verify-empty (local)",
        "terraform-destroy (aws)",
        "verify-empty (aws)",
    ]


def test_the_lock_keeps_a_second_teardown_out(stack_home: Path) -> None:
    _record(stack_home)
    stack_home.joinpath("stack.lock").write_text(str(os.getppid()))
    with pytest.raises(StackError, match="is working on"):
        teardown.run(stack_home)
    assert teardown.run(stack_home, force_unlock=True) == ["local"]


def test_verify_empty_names_what_the_state_still_holds(stack_home: Path) -> None:
    run = tf.working_copy(stack_home, "local")
    state = {"version": 4, "terraform_version": "1.0.3", "serial": 1, "lineage": "x", "outputs": {},
             "resources": [{"mode": "managed", "type": "null_resource", "name": "service",
                            "provider": 'provider["registry.terraform.io/hashicorp/null"]',
                            "instances": [{"index_key": "mlflow", "schema_version": 0,
                                           "attributes": {"id": "1", "triggers": {}}}]}]}  # fmt: skip
    (run.workdir / "terraform.tfstate").write_text(json.dumps(state))
    with pytest.raises(StackError, match=r'local: destroy left null_resource.service\["mlflow"\]; rerun'):
        teardown.verify_empty(stack_home, "local")


def test_stop_serving_stops_serving_and_the_watchdog(stack_home: Path) -> None:
    procs = []
    for name in ("serving", "watchdog"):
        svc = daemons.Service(name, stack_home, "127.0.0.1", 0)
        argv = [sys.executable, "-c", "import time; time.sleep(120)"]
        procs.append(daemons.spawn(svc, argv, dict(os.environ), cwd=stack_home.parent))
    deadline = time.monotonic() + 10
    while len(daemons.stack_processes(stack_home)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert teardown.stop_serving(stack_home) is True
    for proc in procs:
        proc.wait(timeout=10)
    assert daemons.stack_processes(stack_home) == []
    assert teardown.stop_serving(stack_home) is False


def test_a_process_of_the_stack_is_swept_at_the_end(stack_home: Path) -> None:
    env = {**os.environ, daemons.MARKER: str(stack_home), "STEEP_SERVICE": "worker"}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env)
    deadline = time.monotonic() + 10
    while not daemons.stack_processes(stack_home) and time.monotonic() < deadline:
        time.sleep(0.1)
    _record(stack_home, "aws")  # a cloud target: no local service sweeps it before the last step
    assert teardown.run(stack_home) == ["aws"]
    proc.wait(timeout=10)
    assert daemons.stack_processes(stack_home) == []
