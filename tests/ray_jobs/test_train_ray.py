"""Real Ray runs on a two-node cluster on this machine: DDP across nodes, a worker crash, a driver restart.

Each node has one CPU and each worker asks for one, so the two workers of a run sit on different nodes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pytest

from steep.pipeline.training import latest_run, runs_root, train
from steep.ray_jobs import checkpoints
from steep.ray_jobs.worker_config import FAULT_ENV
from tests.conftest_train import tiny_config, toy_splits

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="steep-rt-", dir="/tmp")  # short: Ray's socket paths have a length limit
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", TOKENIZERS_PARALLELISM="false",
                      RAY_TMPDIR=temp)  # fmt: skip
    nodes = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    ray.init(address=nodes.address)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def test_two_workers_on_two_nodes_checkpoint_each_epoch(cluster, causal_dir, tmp_path):
    cfg = tiny_config(tmp_path / "home", causal_dir, workers=2, epochs=2)
    result = train(cfg, toy_splits(cfg, rows=64))
    storage = runs_root(cfg) / result.run_name / "ray" / result.run_name
    saved = sorted(c for c in storage.glob("checkpoint_*") if c.is_dir())
    assert len(saved) == 2  # epoch 1, then the final one
    states = [json.loads((c / checkpoints.STATE_FILE).read_text()) for c in saved]
    assert [s["final"] for s in states] == [False, True] and states[0]["step"] * 2 == states[1]["step"]
    assert (Path(result.model_dir) / "adapter_model.safetensors").is_file()
    assert mlflow.MlflowClient().get_run(result.run_id).info.status == "FINISHED"
    out = mlflow.pyfunc.load_model(result.model_uri).predict(["alpha bravo"], params={"max_new_tokens": 2})
    assert len(out) == 1


def test_a_worker_crash_resumes_from_the_last_checkpoint(cluster, causal_dir, tmp_path, monkeypatch):
    cfg = tiny_config(
        tmp_path / "home", causal_dir, workers=2, epochs=2, checkpoint_every_steps=2, max_failures=1
    )
    monkeypatch.setenv(FAULT_ENV, "3")
    result = train(cfg, toy_splits(cfg, rows=64))
    assert (runs_root(cfg) / result.run_name / "injected-failure").read_text() == "3"
    assert result.resumed_from_step == 2  # restarted from the step-2 checkpoint, not from scratch
    steps = [h["step"] for h in result.history]
    total = json.loads((Path(result.checkpoint_path) / checkpoints.STATE_FILE).read_text())["total_steps"]
    assert steps.count(3) == 2 and steps[-1] == result.metrics["steps"] == total
    assert mlflow.MlflowClient().get_run(result.run_id).info.status == "FINISHED"


# the repo root on sys.path, not tests/: there tests/steep/ would shadow the steep package
DRIVER = """
import sys
sys.path.insert(0, {repo!r})
from tests.conftest_train import tiny_config, toy_splits
from steep.pipeline.training import train
cfg = tiny_config({home!r}, {model!r}, workers=2, epochs=6, checkpoint_every_steps=4)
train(cfg, toy_splits(cfg, rows=64), ray_address={address!r})
"""


def test_resume_after_the_driver_dies(cluster, causal_dir, tmp_path):
    home = tmp_path / "home"
    script = DRIVER.format(
        repo=str(Path(__file__).resolve().parents[2]), home=str(home), model=str(causal_dir),
        address=cluster.address,
    )  # fmt: skip
    driver = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    cfg = tiny_config(home, causal_dir, workers=2, epochs=6, checkpoint_every_steps=4)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not list(runs_root(cfg).glob("*/ray/*/checkpoint_*/state.json")):
            assert driver.poll() is None, "the driver ended before its first checkpoint"
            time.sleep(0.5)
    finally:
        os.kill(driver.pid, signal.SIGKILL)  # the driver dies mid-run
        driver.wait()
    time.sleep(2)  # the job's workers go down with their driver
    states = runs_root(cfg).glob("*/ray/*/checkpoint_*/state.json")
    on_disk = [json.loads(p.read_text())["step"] for p in states]
    name = latest_run(cfg)
    run_id = json.loads((runs_root(cfg) / name / "run.json").read_text())["run_id"]

    result = train(cfg, toy_splits(cfg, rows=64), resume=True)
    assert result.run_name == name and result.run_id == run_id
    # the latest checkpoint on disk, even one Ray's controller had not registered when the driver died
    assert result.resumed_from_step >= max(on_disk) > 0
    assert result.history[0]["step"] == result.resumed_from_step + 1
    total = json.loads((Path(result.checkpoint_path) / checkpoints.STATE_FILE).read_text())["total_steps"]
    assert result.metrics["steps"] == total and total % 6 == 0
    assert mlflow.MlflowClient().get_run(run_id).info.status == "FINISHED"
