"""Ray Train across nodes, for real: a local stack with Ray worker nodes (raylets joined to the head).

One stack serves every test here (provisioning is the slow part): DDP workers land on different nodes and
train exactly what one node trains; a worker node killed mid-run costs a restart from the last checkpoint,
not the run; `steep provision` brings the dead node back.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
import torch

from steep.config import SteepConfig, dump_config
from steep.pipeline import ray_session
from steep.ray_jobs.evaluate import on_ray_nodes
from steep.scoring.candidates import Candidate
from steep.scoring.scores import Role
from steep.stack import current, daemons, teardown
from steep.stack.record import provisioned_targets
from tests.conftest_train import INSTRUCTION, tiny_causal, toy_frame
from tests.stack.conftest import stack_sets

pytestmark = pytest.mark.integration

NODES = 3  # two for the workers, one to take over when a node is killed
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """A local stack with NODES Ray worker nodes; -> (its home, the --set lines that address it)."""
    root = tmp_path_factory.mktemp("multinode")
    home = (root / ".steep").resolve()
    sets = stack_sets(home, stack__local__ray_worker_nodes=str(NODES), stack__idle_timeout="1h")
    code, text = steep(["provision", "--yes"], sets)
    try:
        assert code == 0, text
        yield home, sets
    finally:
        teardown.run(home, force_unlock=True)
        daemons.sweep(home)
        assert daemons.stack_processes(home) == [] and provisioned_targets(home) == []


def steep(args: list[str], sets: list[str]) -> tuple[int, str]:
    """A stack command with the checkout's steep.yaml, its home and ports moved by `sets`."""
    argv = [sys.executable, "-m", "steep", *args, *[a for s in sets for a in ("--set", s)]]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=REPO)
    return done.returncode, done.stdout + done.stderr


def project(root: Path, home: Path, **training: object) -> Path:
    """A user's folder: toy data, a tiny model and a steep.yaml training 2 Ray workers."""
    root.mkdir(parents=True, exist_ok=True)
    data = root / "toy.jsonl"
    toy_frame(96).to_json(data, orient="records", lines=True)
    cfg = SteepConfig.model_validate(
        {
            "project": {"home": str(home)},
            "data": {"source": str(data), "id_column": "id", "text_column": "text",
                     "summary_column": "summary", "group_column": "group",
                     "split": {"train": 0.8, "validation": 0.05, "test": 0.15}},  # 80 rows: 20 steps an epoch
            "validation": {"summary_min_words": 1, "min_rows": 10},
            "model": {"source": str(tiny_causal(root / "tiny")), "max_source_tokens": 24,
                      "max_target_tokens": 6, "instruction": INSTRUCTION},
            "training": {"workers": 2, "batch_size": 4, "epochs": 2, "warmup_ratio": 0.0, **training},
        }
    )  # fmt: skip
    (root / "steep.yaml").write_text(dump_config(cfg))
    return root


def train(root: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    steep_bin = str(Path(sys.executable).with_name("steep"))
    return subprocess.Popen(
        [steep_bin, "train"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})}, start_new_session=True,
    )  # fmt: skip


def finished(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def last_run(tracking_uri: str) -> dict:
    exps = httpx.post(f"{tracking_uri}/api/2.0/mlflow/experiments/search", json={"max_results": 100}).json()
    ids = [e["experiment_id"] for e in exps["experiments"]]
    body = {"experiment_ids": ids, "order_by": ["attributes.start_time DESC"], "max_results": 1}
    return httpx.post(f"{tracking_uri}/api/2.0/mlflow/runs/search", json=body).json()["runs"][0]


def final_weights(home: Path) -> dict[str, torch.Tensor]:
    [run_dir] = sorted((home / "runs").iterdir(), key=lambda p: p.stat().st_mtime)[-1:]
    return torch.load(run_dir / "final" / "trainable.pt")


def test_workers_spread_over_nodes_and_train_what_one_node_trains(stack, tmp_path: Path) -> None:
    home, _ = stack
    root = project(tmp_path / "user", home)
    t0 = time.monotonic()
    out = finished(train(root))
    seconds = time.monotonic() - t0
    assert "training on 2 workers across 2 Ray nodes (ray-worker-" in out, out[-3000:]

    run = last_run(current(home).mlflow_tracking_uri)
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    nodes = json.loads(tags["steep.ray_nodes"])
    assert len({n["id"] for n in nodes}) == 2  # STRICT_SPREAD: one rank per node
    assert all(n["name"].startswith("ray-worker-") for n in nodes)  # never the head, which offers no CPU
    multi = final_weights(home)

    # the same config on one node: a local Ray of this machine (no stack in this project's home)
    single_home = tmp_path / "single" / ".steep"
    single = project(tmp_path / "single", single_home)
    alone = finished(train(single, {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'single.db'}"}))
    assert "Ray nodes" not in alone
    one = final_weights(single_home)
    assert one.keys() == multi.keys()
    worst = max((one[k] - multi[k]).abs().max().item() for k in one)
    assert worst < 1e-5, f"2 nodes vs 1 node differ by {worst}"
    print(f"\n2 workers on 2 nodes: {seconds:.0f} s; largest weight difference from one node: {worst:.2e}")


def test_a_killed_worker_node_costs_a_restart_not_the_run(stack, tmp_path: Path) -> None:
    home, sets = stack
    root = project(tmp_path / "user", home, epochs=40, checkpoint_every_steps=20, max_failures=2)
    proc = train(root)  # 800 steps: long enough for the kill to land mid-run
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # what the user reads
    reader.start()
    try:
        placed = "training on 2 workers across 2 Ray nodes ("
        deadline = time.monotonic() + 300
        while not (
            any(placed in line for line in lines) and any("training step 160/800" in line for line in lines)
        ):  # the ranks' nodes are printed, and Ray has registered checkpoints (one every 20 steps)
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.2)
        nodes = next(line for line in lines if placed in line).split(placed)[1].split(")")[0].split(", ")
        victim = nodes[-1]  # the node of rank 1
        leader = daemons.read_pid(daemons.Service(victim, home, "", 0))
        assert leader is not None
        # the node is gone, as when a machine is lost: its raylet and every process on it, at once (a raylet
        # killed alone leaves its workers running until the head notices, and a short run can finish first)
        for gone in [leader, *leader.children(recursive=True), *daemons.stack_processes(home, victim)]:
            with contextlib.suppress(psutil.Error):
                gone.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        assert proc.wait(timeout=600) == 0, "".join(lines)[-4000:]
        reader.join(timeout=30)
        out = "".join(lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "; restart 1, from step " in out, out[-3000:]
    resumed = int(out.split("; restart 1, from step ")[1].split(")")[0])
    assert resumed > 0  # from a checkpoint, not from scratch
    run = last_run(current(home).mlflow_tracking_uri)
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert run["info"]["status"] == "FINISHED" and metrics["restarts"] == 1
    took = time.monotonic() - killed_at
    print(f"\nraylet killed; the run resumed from step {resumed} and finished {took:.0f} s later")

    # the lost node comes back with the next provision, which replaces only what died
    code, text = steep(["provision", "--yes"], sets)
    assert code == 0 and "1 to add, 0 to change, 1 to destroy" in text, text
    assert daemons.running(home, daemons.ray_worker_names(NODES)) == set(daemons.ray_worker_names(NODES))


def test_evaluation_generates_as_ray_tasks_on_every_worker_node(stack) -> None:
    home, _ = stack
    record = current(home)
    texts = [f"text number {i}" for i in range(10)]

    class Upper:  # a model stand-in, shipped to the nodes by value
        def summarize(self, texts: list[str], batch_size: int, **generation: object) -> list[str]:
            return [t.upper() for t in texts]

    lines: list[str] = []
    with ray_session.RaySession(record.ray_address) as session:
        assert len(session.connect()) == NODES  # the head offers no CPU
        generate = on_ray_nodes({"max_new_tokens": 4}, 2, record.mlflow_tracking_uri, lines.append)
        out = generate(Candidate("challenger", Role.CHALLENGER, lambda: Upper()), texts)
        local = generate(Candidate("base", Role.BASE, lambda: Upper(), portable=False), texts)
    assert out == local == [t.upper() for t in texts]  # shards come back in order
    [line] = lines  # only the portable candidate went to the nodes
    assert f"10 summaries as Ray tasks on {NODES} nodes" in line, line
    assert all(f"ray-worker-{i}: " in line for i in range(1, NODES + 1)), line
