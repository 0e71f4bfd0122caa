"""`steep run --resume` for real: a `steep run` killed (SIGKILL) after training, then resumed by the user.

A user's folder with its own data and a tiny model, the embedded default (ephemeral Prefect, sqlite MLflow).
While the first run trains, a second `steep run` of the project is refused; after the kill, a resume with
changed data is refused naming the digest; with the data back, the resume trains nothing, evaluates,
registers and says where it went on from.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest

from steep.config import SteepConfig, dump_config
from steep.registry import Registry, model_name
from tests.conftest_train import INSTRUCTION, tiny_causal, toy_frame

pytestmark = pytest.mark.integration


def project(root: Path) -> Path:
    """A user's folder: their data (96 rows), a tiny model and a steep.yaml training in-process."""
    root.mkdir(parents=True)
    data = root / "notes.jsonl"
    toy_frame(96).to_json(data, orient="records", lines=True)
    cfg = SteepConfig.model_validate(
        {
            "project": {"name": "resume-drill", "home": str(root / ".steep")},
            "data": {"source": str(data), "id_column": "id", "text_column": "text",
                     "summary_column": "summary", "group_column": "group"},
            "validation": {"summary_min_words": 1, "min_rows": 10},
            "model": {"source": str(tiny_causal(root / "tiny")), "max_source_tokens": 24,
                      "max_target_tokens": 6, "instruction": INSTRUCTION},
            "training": {"workers": 0, "batch_size": 8, "epochs": 20, "warmup_ratio": 0.0},
            "serving": {"build_on_promote": False, "max_new_tokens": 4},
        }
    )  # fmt: skip
    (root / "steep.yaml").write_text(dump_config(cfg))
    return root


def env() -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("STEEP", "PREFECT_", "MLFLOW_", "RAY_"))}
    return {**keep, "COLUMNS": "200"}


def steep(root: Path, *args: str) -> tuple[int, str, float]:
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "steep", *args], cwd=root, env=env(), capture_output=True,
                          text=True, timeout=900, stdin=subprocess.DEVNULL)  # fmt: skip
    return done.returncode, done.stdout + done.stderr, time.monotonic() - t0


def test_a_run_killed_after_training_resumes_without_training_again(tmp_path: Path):
    root = project(tmp_path / "user")
    proc = subprocess.Popen(
        [sys.executable, "-m", "steep", "run"], cwd=root, env=env(), text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    t0 = time.monotonic()
    try:
        deadline = time.monotonic() + 600
        while not any("training step" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-4000:]
            time.sleep(0.2)
        rc, second, _ = steep(root, "run")  # the same project, while the first one trains
        assert rc == 2 and "another `steep run` of this project is in progress: flow run " in second, second
        while not any("trained: MLflow run" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-4000:]
            time.sleep(0.1)
        first_run_s = time.monotonic() - t0
        os.killpg(proc.pid, signal.SIGKILL)  # killed hard, right after training: no `finally` runs
        proc.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    reader.join(timeout=10)
    run_id = "".join(lines).split("trained: MLflow run ")[1].split(",")[0]

    data = root / "notes.jsonl"
    original = data.read_text()
    data.write_text(original.replace("alpha", "omega", 1))  # the data changed since: not the same run
    rc, refused, _ = steep(root, "run", "--resume")
    assert rc == 2 and "cannot be resumed" in refused and "data digest: " in refused, refused
    assert "Traceback" not in refused
    data.write_text(original)

    rc, out, resume_s = steep(root, "run", "--resume")
    assert rc == 0, out[-6000:]
    assert "resuming `steep run` " in out and "from evaluate" in out
    assert "not trained again" in out and "training step" not in out  # no step ran
    assert "resumed from evaluate" in out

    mlflow.set_tracking_uri(f"sqlite:///{root / '.steep' / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    losses = client.get_metric_history(run_id, "loss")
    steps = [m.step for m in losses]
    assert len(steps) == len(set(steps)) > 0  # each step logged once: none trained twice
    run = client.get_run(run_id)
    assert run.data.tags["steep.resumed_from"].startswith("evaluate: flow run ")
    registry = Registry(model_name(SteepConfig.model_validate({"project": {"name": "resume-drill"}})))
    [version] = registry.versions()
    assert version.run_id == run_id and version.tags["steep.resumed_from"].startswith("evaluate")

    rc, again, _ = steep(root, "run", "--resume")  # it completed: nothing left to resume
    assert rc == 2 and "nothing to resume" in again, again
    print(f"\nfirst run to the end of training: {first_run_s:.0f} s; the resumed run: {resume_s:.0f} s")
