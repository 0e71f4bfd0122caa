"""`steep destroy` stops a `steep serve` of the same project, also when no stack is provisioned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from steep.config import dump_config
from steep.serving import process
from steep.stack import daemons
from steep.stack.daemons import free_port
from tests.bentos.conftest import register_tiny, tiny_serving_config

pytestmark = pytest.mark.integration

STEEP = Path(sys.executable).with_name("steep")


def test_destroy_stops_a_running_steep_serve_and_its_server(tmp_path):
    cfg = tiny_serving_config(tmp_path / "home", tmp_path / "tiny")
    register_tiny(cfg, tmp_path / "tiny")
    config = tmp_path / "steep.yaml"
    config.write_text(dump_config(cfg))
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        served = subprocess.Popen(
            [str(STEEP), "serve", "--config", str(config), "--port", str(port)],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ),
        )  # fmt: skip
    try:
        process.wait_ready(f"http://127.0.0.1:{port}", served, timeout_s=150)
        pid_file = daemons.Service(daemons.SERVING, cfg.home, "", 0).pid_file
        assert json.loads(pid_file.read_text())["pid"] == served.pid  # steep serve recorded itself
        server = {p.pid for p in psutil.Process(served.pid).children(recursive=True)}
        assert server

        done = subprocess.run(
            [str(STEEP), "destroy", "--yes", "--config", str(config)],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "stopped this project's `steep serve`" in done.stdout
        assert served.wait(timeout=60) is not None
        alive = [pid for pid in server if psutil.pid_exists(pid)]
        assert all(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE for pid in alive), alive
        assert not pid_file.exists()

        again = subprocess.run(
            [str(STEEP), "destroy", "--yes", "--config", str(config)],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert again.returncode == 0 and "stopped" not in again.stdout  # nothing left to stop
    except BaseException:
        print(log.read_text()[-4000:] if log.exists() else "(no serve log)")
        raise
    finally:
        if served.poll() is None:
            os.killpg(served.pid, 9)
