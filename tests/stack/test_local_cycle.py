"""The local target for real: terraform apply starts MLflow, Prefect and a Ray head; destroy leaves nothing.

Each test provisions on free ports under its own temp folder, so it can run beside other test runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from steep.stack import CONTRACT, current, daemons, teardown
from steep.stack.record import provisioned_targets
from tests.stack.conftest import stack_sets

pytestmark = pytest.mark.integration

PROBE = """
import json, os, sys
from steep.stack import current
stack = current(sys.argv[1])
os.environ["PREFECT_API_URL"] = stack.prefect_api_url
import mlflow, ray
from prefect import flow
from prefect.client.orchestration import get_client

mlflow.set_tracking_uri(stack.mlflow_tracking_uri)
mlflow.set_experiment("stack-probe")
with mlflow.start_run() as run:
    mlflow.log_metric("loss", 0.5)
    mlflow.log_text("hello", "probe.txt")

@flow(name="stack-probe")
def probe() -> int:
    return 41 + 1

answer = probe()
with get_client(sync_client=True) as client:
    names = [f.name for f in client.read_flows()]
ray.init(address=stack.ray_address, logging_level="ERROR")
value = ray.get(ray.remote(lambda: 7).remote())
ray.shutdown()
print(json.dumps({"run_id": run.info.run_id, "answer": answer, "flows": names, "ray": value}))
"""


def service_counts(home: Path) -> dict[str, int]:
    """How many processes of the stack run each daemon's main program (one each, or a duplicate started)."""
    counts = dict.fromkeys(("mlflow server", "prefect server", "ray start", "gcs_server"), 0)
    for proc in daemons.stack_processes(home):
        try:
            argv = [*proc.cmdline(), "", ""]
        except psutil.Error:
            continue  # a Ray worker that just exited
        line = " ".join([argv[0], Path(argv[1]).name, argv[2]])
        for key in counts:
            counts[key] += key in line
    return counts


@pytest.fixture(autouse=True)
def _never_leave_a_stack(tmp_path: Path):
    """Whatever a test asserts, its stack goes away at the end (a failed test must not leak daemons)."""
    yield
    home = (tmp_path / ".steep").resolve()
    if daemons.stack_processes(home) or provisioned_targets(home):
        try:
            teardown.run(home, force_unlock=True)
        finally:
            daemons.sweep(home)


def steep(args: list[str], sets: list[str]) -> tuple[int, str]:
    """One command as a user runs it: in its own process.

    Prefect binds its log handler to the stderr it finds when first imported; run in-process, a later test
    would log into an earlier test's closed capture.
    """
    argv = [sys.executable, "-m", "steep", *args, *[a for s in sets for a in ("--set", s)]]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    return done.returncode, done.stdout + done.stderr


def test_provision_run_destroy(tmp_path) -> None:
    home = (tmp_path / ".steep").resolve()
    sets = stack_sets(home)
    t0 = time.monotonic()
    code, text = steep(["provision", "--yes", "--ttl", "2h"], sets)
    provision_s = time.monotonic() - t0
    assert code == 0, text
    assert "plan: 3 to add, 0 to change, 0 to destroy" in text and "$0.00/hour" in text
    stack = current(home)
    assert stack is not None and stack.target == "local"
    record = json.loads((home / "stack.json").read_text())
    assert set(CONTRACT) <= set(record["outputs"]) and record["expires_at"]
    procs = daemons.stack_processes(home)
    assert len(procs) >= 4  # three services + the watchdog (Ray alone spawns several)

    # the servers are real: an MLflow run, a Prefect flow run, a Ray task
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "client")}
    cmd = [sys.executable, "-c", PROBE, str(home)]
    probe = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert probe.returncode == 0, probe.stderr[-3000:]
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    assert result["answer"] == 42 and "stack-probe" in result["flows"] and result["ray"] == 7
    artifacts = home / "stack" / "mlflow" / "artifacts"
    assert list(artifacts.rglob("probe.txt")), "the run's artifact must land in the stack's artifact store"

    code, text = steep(["status"], sets)
    assert code == 0 and text.count("healthy") >= 4 and "left)" in text
    code, text = steep(["get", "ray_address", "--json"], sets)
    assert json.loads(text) == stack.ray_address

    # provisioning again changes nothing and starts no second copy
    leaders = {name: (home / "run" / f"{name}.pid").read_text() for name in daemons.SERVICES}
    code, text = steep(["provision", "--yes"], sets)
    assert code == 0 and "plan: 0 to add, 0 to change, 0 to destroy" in text, text
    assert {name: (home / "run" / f"{name}.pid").read_text() for name in daemons.SERVICES} == leaders
    assert service_counts(home) == {"mlflow server": 1, "prefect server": 1, "ray start": 1, "gcs_server": 1}

    t0 = time.monotonic()
    code, text = steep(["destroy", "--yes"], sets)
    destroy_s = time.monotonic() - t0
    assert code == 0, text
    assert daemons.stack_processes(home) == []
    assert current(home) is None and provisioned_targets(home) == []
    code, text = steep(["destroy", "--yes"], sets)
    assert code == 0 and "nothing to destroy" in text
    print(
        f"\nprovision {provision_s:.1f}s, destroy {destroy_s:.1f}s, {len(procs)} processes while up, 0 after"
    )


def test_destroy_after_an_apply_that_failed_half_way(tmp_path) -> None:
    home = (tmp_path / ".steep").resolve()
    sets = stack_sets(home, **{"stack__idle_timeout": "1h"})
    (home / "stack" / "mlflow" / "mlflow.db").mkdir(parents=True)  # MLflow cannot open its database
    code, text = steep(["provision", "--yes"], sets)
    assert code == 2 and "mlflow exited" in text and "clean up with `steep destroy`" in text
    assert current(home) is None
    assert provisioned_targets(home) == ["local"]
    assert daemons.stack_processes(home, "mlflow") == []  # the failed service cleaned up after itself
    assert daemons.stack_processes(home), "prefect and ray came up before the failure"
    code, text = steep(["status"], sets)
    assert "state for local remains: run `steep destroy`" in text
    code, text = steep(["destroy", "--yes"], sets)
    assert code == 0, text
    assert daemons.stack_processes(home) == [] and provisioned_targets(home) == []


def test_ttl_tears_the_stack_down(tmp_path) -> None:
    home = (tmp_path / ".steep").resolve()
    sets = stack_sets(home, **{"stack__idle_check_interval": "2s"})
    code, text = steep(["provision", "--yes", "--ttl", "5s"], sets)
    assert code == 0, text
    deadline = time.monotonic() + 180
    while current(home) is not None and time.monotonic() < deadline:
        time.sleep(2)
    assert current(home) is None, (home / "logs" / "watchdog.log").read_text()[-3000:]
    while daemons.stack_processes(home) and time.monotonic() < deadline:
        time.sleep(1)
    assert daemons.stack_processes(home) == []
    log = (home / "logs" / "watchdog.log").read_text()
    assert "tearing down: TTL expired" in log
