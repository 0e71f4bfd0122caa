"""Ray Train across nodes, for real: a local stack with Ray worker nodes (raylets joined to the head).

One stack serves every test here (provisioning is the slow part): DDP workers land on different nodes and
train exactly what one node trains; a spot reclaim announced by `steep drill preempt` costs at most a step
and trains what an uninterrupted run trains; a node lost with no notice costs up to the checkpoint interval;
with no spare node the run says what it waits for, and the stack's watchdog brings the lost node back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
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


class Training:
    """`steep train` in the user's folder, its terminal read line by line as the user reads it."""

    def __init__(self, root: Path):
        self.proc = train(root)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()
        self.started = time.monotonic()

    @property
    def out(self) -> str:
        return "".join(self.lines)

    def wait_for(self, *texts: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not all(any(t in line for line in self.lines) for t in texts):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.out[-3000:]
            time.sleep(0.2)

    def nodes(self) -> list[str]:
        """The ranks' nodes of the first placement, in rank order, as the terminal named them."""
        placed = "training on 2 workers across 2 Ray nodes ("
        line = next(line for line in self.lines if placed in line)
        return line.split(placed)[1].split(")")[0].split(", ")

    def finished(self, timeout: float = 900) -> float:
        """-> the run's wall time."""
        try:
            assert self.proc.wait(timeout=timeout) == 0, self.out[-4000:]
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.reader.join(timeout=30)
        return time.monotonic() - self.started


def metrics_of(run: dict) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"]["metrics"]}


def comes_back(home: Path, node: str, timeout: float = 180) -> float:
    """Seconds until the stack's watchdog has the lost node running again (no `steep provision` by hand)."""
    t0 = time.monotonic()
    while not daemons.running(home, [node]):
        assert time.monotonic() - t0 < timeout, f"{node} did not come back within {timeout:.0f} s"
        time.sleep(1)
    return time.monotonic() - t0


def test_a_spot_reclaim_costs_at_most_a_step_and_trains_what_an_uninterrupted_run_trains(stack, tmp_path):
    """The drill drains a training node with a 20 s notice, then takes it: the loop checkpoints on the
    notice and every step after; Ray restarts on the spare node from the last one."""
    home, sets = stack
    root = project(tmp_path / "user", home, epochs=20, checkpoint_every_steps=20)  # 400 steps
    uninterrupted_s = Training(root).finished()
    uninterrupted = final_weights(home)

    run = Training(root)
    run.wait_for("training on 2 workers across 2 Ray nodes (", "training step 80/400")
    code, text = steep(["drill", "preempt", "--grace", "20s"], sets)  # returns once the node is gone
    assert code == 0 and "preemption notice sent" in text and "is gone" in text, text
    victim = text.split(" is being reclaimed")[0].split()[-1]
    assert victim in run.nodes()  # the drill took a node that ran a training worker
    reclaimed_s = run.finished()
    out = run.out
    assert f"spot reclaim notice for {victim} at step " in out, out[-3000:]
    assert "training restarts after a spot reclaim, from step " in out, out[-3000:]

    record = last_run(current(home).mlflow_tracking_uri)
    metrics = metrics_of(record)
    assert record["info"]["status"] == "FINISHED"
    assert (metrics["preemptions"], metrics["restarts"]) == (1, 1) and metrics["steps_redone"] <= 1
    worst = max((uninterrupted[k] - final_weights(home)[k]).abs().max().item() for k in uninterrupted)
    assert worst < 1e-5, f"the reclaimed run differs from an uninterrupted one by {worst}"
    tags = {t["key"]: t["value"] for t in record["data"]["tags"]}
    [notice] = json.loads(tags["steep.preemptions"])
    drained_at = notice["deadline"] - 20
    back_s = comes_back(home, victim)
    print(
        f"\nreclaim drill: notice seen {notice['notice'] - drained_at:.1f} s after the drain, checkpoint in "
        f"{notice['checkpoint'] - drained_at:.1f} s after it (step {notice['checkpoint_step']}); "
        f"{metrics['steps_redone']:.0f} step(s) redone; {reclaimed_s:.0f} s against {uninterrupted_s:.0f} s "
        f"uninterrupted; {victim} back {back_s:.0f} s after the test saw it gone"
    )


def test_a_node_lost_with_no_notice_costs_up_to_the_checkpoint_interval(stack, tmp_path: Path) -> None:
    """The contrast: `steep drill lose` kills a node at once; the run resumes from its last periodic
    checkpoint (every 20 steps) on the spare node, and the lost node comes back by itself."""
    home, sets = stack
    root = project(tmp_path / "user", home, epochs=20, checkpoint_every_steps=20, max_failures=2)
    run = Training(root)
    run.wait_for("training on 2 workers across 2 Ray nodes (", "training step 160/400")
    victim = run.nodes()[-1]  # the node of rank 1
    code, text = steep(["drill", "lose", "--node", victim], sets)
    assert code == 0 and f"{victim} is gone" in text, text
    killed_at = time.monotonic()
    run.finished()
    out = run.out
    assert "training restarts after a failure, from step " in out, out[-3000:]
    resumed = int(out.split("training restarts after a failure, from step ")[1].split(":")[0])
    assert resumed > 0  # from a checkpoint, not from scratch
    metrics = metrics_of(last_run(current(home).mlflow_tracking_uri))
    assert (metrics["restarts"], metrics["preemptions"]) == (1, 0)
    assert 0 <= metrics["steps_redone"] <= 20  # no notice: back to the last periodic checkpoint
    took = time.monotonic() - killed_at
    back_s = comes_back(home, victim)
    redone = metrics["steps_redone"]
    print(f"\nnode lost with no notice: resumed from step {resumed}, {redone:.0f} step(s) redone, finished "
          f"{took:.0f} s later; {victim} back after {back_s:.0f} s more")  # fmt: skip


def test_with_no_spare_node_the_run_says_what_it_waits_for_until_the_node_is_back(stack, tmp_path):
    """As many workers as nodes: a lost node leaves the run waiting; it says so, the watchdog starts the node
    again (as an autoscaler replaces a machine), and the run goes on."""
    home, sets = stack
    root = project(tmp_path / "user", home, workers=NODES, batch_size=6, epochs=20, checkpoint_every_steps=20)
    run = Training(root)
    run.wait_for(f"training on {NODES} workers across {NODES} Ray nodes (", "training step 52/260")  # a fifth
    code, text = steep(["drill", "lose"], sets)
    assert code == 0 and " is gone" in text, text
    victim = text.split(" is gone")[0].split()[-1]
    run.wait_for(f"training is waiting to place its {NODES} workers again since ", f"{victim} (lost by ")
    run.finished()
    out = run.out
    assert "training restarts after a failure" in out
    assert f"{NODES - 1} live node(s) with CPUs now" in out or f"{NODES} live node(s) with CPUs now" in out
    metrics = metrics_of(last_run(current(home).mlflow_tracking_uri))
    assert metrics["restarts"] == 1
    assert daemons.running(home, daemons.ray_worker_names(NODES)) == set(daemons.ray_worker_names(NODES))


def test_a_placement_that_never_comes_fails_the_run_cleanly(stack, tmp_path: Path) -> None:
    """More workers than the nodes' CPUs hold: after training.placement_timeout the run fails, FAILED in
    MLflow with the cause, exit 2, naming what to do."""
    home, _ = stack
    root = project(tmp_path / "user", home, workers=NODES + 1, batch_size=8, placement_timeout="30s")
    t0 = time.monotonic()
    proc = train(root)
    out, _ = proc.communicate(timeout=300)
    waited = time.monotonic() - t0
    assert proc.returncode == 2, out[-3000:]
    assert (
        f"training waited training.placement_timeout=30s for nodes to place its {NODES + 1} worker(s)" in out
    )
    assert "Traceback" not in out
    record = last_run(current(home).mlflow_tracking_uri)
    assert record["info"]["status"] == "FAILED"
    print(f"\nno placement: the run failed {waited:.0f} s after it started (placement_timeout 30s)")


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
