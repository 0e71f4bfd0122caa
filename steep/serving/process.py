"""Starting the real server: `bentoml serve` in a child process with the resolved config handed over.

`steep serve`, the integration tests and bench/serve_load.py all start it through `start()`, so what is
tested and measured is what users run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from steep import quiet
from steep.config import ENV_PREFIX, ProjectConfig, SteepConfig
from steep.serving import ServingError
from steep.serving.handoff import CONFIG_ENV, config_env

# the BentoML service, imported by `bentoml serve` and `bentoml build`; its name in BentoML is "summarizer"
SERVICE = "steep.bentos.summarizer.service:SummarizerService"


def bentoml_home(cfg: SteepConfig) -> Path:
    return (cfg.home / "bentoml").resolve()


def bentoml_argv() -> list[str]:
    """The bentoml CLI of this interpreter's environment (the venv that runs steep)."""
    bentoml = Path(sys.executable).with_name("bentoml")
    return [str(bentoml)] if bentoml.exists() else [sys.executable, "-m", "bentoml"]


def environment(cfg: SteepConfig) -> dict[str, str]:
    """The server's environment: the resolved config, BentoML state under project.home, no telemetry."""
    env = {**quiet.ENV, **os.environ}  # quiet by default, as steep's CLI is
    for name in [n for n in env if n.startswith(ENV_PREFIX)]:  # already applied: --set must keep winning
        del env[name]
    env[CONFIG_ENV] = config_env(cfg.model_copy(update={"project": _absolute_home(cfg)}))
    env.setdefault("BENTOML_HOME", str(bentoml_home(cfg)))
    return env


def _absolute_home(cfg: SteepConfig) -> ProjectConfig:
    """project.home made absolute: the server may run in another working directory."""
    return cfg.project.model_copy(update={"home": str(cfg.home.resolve())})


def command(cfg: SteepConfig, host: str | None = None, port: int | None = None) -> list[str]:
    """`bentoml serve` of the service, its paths read from the project folder."""
    return [
        *bentoml_argv(),
        "serve",
        SERVICE,
        "--host",
        host or cfg.serving.host,
        "--port",
        str(port or cfg.serving.port),
        "--working-dir",  # the service is imported from the installed package; paths mean the project
        str(cfg.root),
    ]


def start(
    cfg: SteepConfig,
    host: str | None = None,
    port: int | None = None,
    log_file: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start `bentoml serve` in its own process group (so stop() ends its workers too)."""
    env = environment(cfg)
    env.update(extra_env or {})
    out = open(log_file, "ab") if log_file else None  # noqa: SIM115  (the child owns it)
    try:
        return subprocess.Popen(
            command(cfg, host, port),
            env=env,
            cwd=str(cfg.root),
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )
    finally:
        if out:
            out.close()


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout_s: float = 120.0) -> None:
    """Block until GET /readyz answers 200 (the model is loaded); fail fast if the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServingError(
                f"the server exited with code {proc.returncode} before it was ready; see its log"
            )
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise ServingError(f"the server at {url} was not ready after {timeout_s:.0f} s; see its log")


def stop(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """SIGTERM to the server's process group, SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass
