"""steep as a user meets it: the wheel installed into a fresh venv, a project folder outside the checkout
with its own name and data schema, every command run as a user types it, on the embedded default and then
on a provisioned local stack (real MLflow, Prefect and Ray servers).

One test walks the whole path in order; each step asserts what the terminal says, as a user reads it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from steep.serving import ServingError, process
from steep.stack import daemons
from tests.conftest_train import INSTRUCTION, tiny_causal, toy_frame
from tests.steep.test_quiet import NOISE

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROJECT = "acme-contracts"
MODEL = f"{PROJECT}-summarizer"
# a schema of the user's own: other names for every role, and a group column
COLUMNS = {"id": "clause_ref", "group": "agreement", "text": "clause_text", "summary": "plain_summary"}


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """`pip install steep-*.whl` (not editable) into a new venv: only what the wheel carries is there."""
    root = tmp_path_factory.mktemp("install")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(REPO)],
        check=True, capture_output=True, cwd=root,
    )  # fmt: skip
    (wheel,) = (root / "dist").glob("steep-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    pip = [str(root / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    done = subprocess.run([*pip, str(wheel)], capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "venv"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The user's folder: a CSV of their own schema and a small model folder, nothing of steep's."""
    folder = tmp_path_factory.mktemp("acme")
    assert not folder.resolve().is_relative_to(REPO)
    toy_frame(160).rename(columns=COLUMNS).to_csv(folder / "clauses.csv", index=False)
    tiny_causal(folder / "models" / "tiny")
    return folder


class User:
    """Types `steep ...` in the project folder (or one below it) and reads what the terminal shows."""

    def __init__(self, venv: Path, folder: Path):
        self.bin = venv / "bin" / "steep"
        self.folder = folder
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("STEEP", "PREFECT_", "MLFLOW_", "RAY_"))
        }
        self.env.update({"COLUMNS": "200", "PYTHONPATH": ""})

    def __call__(self, *args: str, cwd: Path | None = None, timeout: float = 900) -> tuple[int, str]:
        done = subprocess.run(
            [str(self.bin), *args], cwd=cwd or self.folder, env=self.env, capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return done.returncode, done.stdout + done.stderr

    def ok(self, *args: str, cwd: Path | None = None) -> str:
        rc, out = self(*args, cwd=cwd)
        assert rc == 0, f"steep {' '.join(args)} exited {rc}:\n{out[-6000:]}"
        assert "Traceback" not in out, out[-6000:]
        return out

    def serve_and_ask(
        self, port: int, text: str, leave_running: bool = False
    ) -> tuple[dict, subprocess.Popen]:
        """`steep serve` in the background, one request, then Ctrl-C as a user would (unless left running)."""
        log = self.folder / f"serve-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(self.bin), "serve"], cwd=self.folder, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            try:
                process.wait_ready(f"http://127.0.0.1:{port}", proc, timeout_s=240)
            except ServingError as exc:
                pytest.fail(f"steep serve not ready ({exc}):\n{log.read_text()[-4000:]}")
            reply = httpx.post(f"http://127.0.0.1:{port}/summarize", json={"texts": [text]}, timeout=120)
            assert reply.status_code == 200, reply.text
            return reply.json()[0], proc
        finally:
            if not leave_running or proc.poll() is not None:
                stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """Ctrl-C to the process group, as a terminal sends it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def configure(path: Path, ports: list[int]) -> None:
    """What the user edits after `steep init`: the small model, a short training, free ports."""
    cfg = yaml.safe_load(path.read_text())
    cfg["model"].update(source="./models/tiny", instruction=INSTRUCTION, max_source_tokens=24,
                        max_target_tokens=6)  # fmt: skip
    cfg["training"].update(workers=0, method="full", epochs=10, batch_size=8, learning_rate=1e-2,
                           warmup_ratio=0.0)  # fmt: skip
    cfg["validation"].update(min_rows=20, summary_min_words=1)
    cfg["evaluation"].update(max_regression=1.0)
    cfg["serving"].update(port=ports[0], max_new_tokens=4)
    cfg["stack"]["local"].update(mlflow_port=ports[1], prefect_port=ports[2], ray_port=ports[3],
                                 ray_dashboard_port=ports[4])  # fmt: skip
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def test_a_user_project_from_init_to_destroy(venv, project):
    steep = User(venv, project)
    home = project / ".steep"

    # no steep.yaml yet: one clear line that says what to do
    rc, out = steep("run")
    assert rc == 2 and "steep init" in out and "Traceback" not in out, out

    out = steep.ok("init", "--data", "clauses.csv", "--name", PROJECT)
    for role, column in COLUMNS.items():
        assert column in out, (role, out)
    written = yaml.safe_load((project / "steep.yaml").read_text())
    assert written["data"]["text_column"] == COLUMNS["text"]
    assert written["data"]["summary_column"] == COLUMNS["summary"]
    assert written["data"]["group_column"] == COLUMNS["group"]
    assert written["data"]["id_column"] == COLUMNS["id"]
    assert (project / ".gitignore").read_text().strip().endswith(".steep/")
    ports = daemons.free_ports(5)
    configure(project / "steep.yaml", ports)

    # from a folder below the project, as from its root
    (project / "notes").mkdir()
    out = steep.ok("validate", cwd=project / "notes")
    assert "passed" in out.lower()

    out = steep.ok("run")
    assert "version 1: promoted to champion" in out, out[-4000:]
    assert f"{MODEL}:v1" in out  # the bento carries the user's project name
    assert [n for n in [*NOISE, "temporary server", "UserWarning"] if n in out] == [], out  # steep only
    assert (home / "bentoml" / "bentos" / MODEL / "v1" / "bento.yaml").is_file()
    assert not (project / "notes" / ".steep").exists()

    out = steep.ok("models", "list")
    assert MODEL in out and "champion" in out

    answer, _ = steep.serve_and_ask(ports[0], "alpha bravo charlie delta echo foxtrot golf")
    assert answer["model_name"] == MODEL and answer["model_version"] == "1"

    out = steep.ok("deploy", "--dry-run")
    assert "finetune" in out and "drift-check" in out and PROJECT in out

    # the same project on a provisioned stack: real MLflow, Prefect and Ray servers
    served = None
    try:
        out = steep.ok("provision", "--target", "local", "--yes")
        assert (home / "stack.json").is_file()
        out = steep.ok("run")
        assert "version 1: promoted to champion" in out, out[-4000:]  # the stack's registry starts empty
        assert f"http://127.0.0.1:{ports[1]}" in out  # tracked on the stack's MLflow server
        answer, served = steep.serve_and_ask(
            ports[0], "kilo lima mike november oscar papa", leave_running=True
        )
        assert answer["model_name"] == MODEL and answer["model_version"] == "1"
        server_pids = {p.pid for p in psutil.Process(served.pid).children(recursive=True)}
        assert server_pids  # the bentoml processes steep serve started
    finally:
        rc, out = steep("destroy", "--yes")  # stops the `steep serve` still running, as the stack goes
    assert rc == 0, out
    assert served is not None and served.wait(timeout=60) is not None  # steep serve itself ended
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in server_pids)  # fmt: skip
    assert not (home / "stack.json").exists()
    assert daemons.stack_processes(home.resolve()) == []
