"""A training run killed with SIGKILL: it stops counting as activity within a bounded time, the next look
marks it KILLED in MLflow, and nothing it started keeps running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from steep import heartbeat
from steep.config import SteepConfig, dump_config
from steep.stack import daemons, lifecycle
from tests.conftest_train import INSTRUCTION, tiny_causal, toy_frame

pytestmark = pytest.mark.integration

BEAT_S = 1.0


def runs(url: str) -> list[dict]:
    exps = httpx.post(f"{url}/api/2.0/mlflow/experiments/search", json={"max_results": 100}).json()
    ids = [e["experiment_id"] for e in exps.get("experiments", [])]
    found = httpx.post(f"{url}/api/2.0/mlflow/runs/search", json={"experiment_ids": ids}).json()
    return found.get("runs", [])


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run.get("data", {}).get("tags", [])}


def wait_for(what, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := what():
            return found
        time.sleep(0.5)
    pytest.fail(message)


def test_a_run_killed_hard_stops_counting_and_leaves_nothing_running(tmp_path: Path):
    svc = daemons.Service("mlflow", tmp_path / "mlflow", "127.0.0.1", daemons.free_port())
    daemons.start(svc)
    url = f"http://{svc.host}:{svc.port}"
    data = tmp_path / "toy.jsonl"
    toy_frame(80).to_json(data, orient="records", lines=True)
    cfg = SteepConfig.model_validate(
        {
            "project": {"home": str(tmp_path / "home")},
            "data": {
                "source": str(data),
                "id_column": "id",
                "text_column": "text",
                "summary_column": "summary",
                "group_column": "group",
            },
            "validation": {"summary_min_words": 1, "min_rows": 10},
            "model": {
                "source": str(tiny_causal(tmp_path / "tiny")),
                "max_source_tokens": 24,
                "max_target_tokens": 6,
                "instruction": INSTRUCTION,
            },
            "training": {"workers": 1, "batch_size": 2, "epochs": 200, "warmup_ratio": 0.0},
        }
    )  # fmt: skip  (one Ray Train worker: a local Ray cluster whose processes outlive a killed driver)
    (tmp_path / "steep.yaml").write_text(dump_config(cfg))
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, heartbeat.INTERVAL_ENV: str(BEAT_S)}
    log = tmp_path / "train.log"
    with open(log, "wb") as out:
        steep = str(Path(sys.executable).with_name("steep"))
        driver = subprocess.Popen([steep, "train"], cwd=tmp_path, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        run = wait_for(
            lambda: next((r for r in runs(url) if heartbeat.TAG in tags(r)), None),
            240,
            f"no beating run:\n{log.read_text()[-3000:]}",
        )
        wait_for(lambda: lifecycle.mlflow_activity(url)[0], 60, "a beating run must count as activity")
        started = wait_for(lambda: heartbeat.orphans() or [p for p in psutil.process_iter()
                                                             if _driven_by(p, driver.pid)], 240,
                           f"Ray never started:\n{log.read_text()[-3000:]}")  # fmt: skip
        assert started
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone, as the OOM killer does
        driver.wait(timeout=30)
        killed_at = time.time()

        left = heartbeat.orphans()  # Ray usually stops its own processes; whatever it leaves is reaped below
        wait_for(lambda: not lifecycle.mlflow_activity(url)[0], 10 * BEAT_S * heartbeat.STALE_BEATS,
                 "a run that stopped beating still counts as activity")  # fmt: skip
        assert time.time() - killed_at <= (heartbeat.STALE_BEATS + 3) * BEAT_S + 10  # bounded
        [after] = [r for r in runs(url) if r["info"]["run_id"] == run["info"]["run_id"]]
        assert after["info"]["status"] == "KILLED"
        assert "no heartbeat since" in tags(after)[heartbeat.KILLED_TAG]

        heartbeat.reap_orphans()  # what the watchdog's next check, and the next `steep run`, do
        assert heartbeat.orphans() == []
        assert not [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not [p for p in psutil.process_iter() if _driven_by(p, driver.pid) and p.is_running()
                    and p.status() != psutil.STATUS_ZOMBIE]  # fmt: skip
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        heartbeat.reap_orphans()
        daemons.stop(svc)


def _driven_by(proc: psutil.Process, pid: int) -> bool:
    try:
        return proc.environ().get(heartbeat.DRIVER_ENV) == str(pid)
    except psutil.Error:
        return False
