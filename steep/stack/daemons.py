"""The local target's services (MLflow, Prefect, a Ray head and its worker nodes) as daemons with pid files.

Terraform's local-exec provisioners call `python -m steep.stack.daemons ... start|stop <service>`, so the
process handling (health wait, clean-up of a half-started service, a final sweep) is plain, testable Python
instead of shell one-liners. Every process of a stack carries STEEP_STACK_HOME in its environment; that
marker is how destroy proves that nothing of the stack is left, whatever a service spawned.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path

import httpx
import psutil

from steep import quiet
from steep.errors import SteepError

MARKER = "STEEP_STACK_HOME"
SERVING = "serving"  # `steep serve`: not a stack service, but stopped with the stack (pid file, marker)
SERVICES = ("mlflow", "prefect", "ray")
RAY_WORKER = "ray-worker"  # worker node i of the local Ray cluster is the service `ray-worker-<i>`
NODE_LABEL = "steep-node"  # the Ray node label that names the service a node runs as
RAY_WORKER_PORTS = 100  # Ray's workers listen on min-worker-port and the ports just above it
STABLE_PORTS_FROM = 20000  # stable ports (free_ports) are drawn from here up to the ephemeral range
# the servers' own settings, besides steep.quiet.ENV: MLflow without its job runner (2 processes, not 10)
_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


class DaemonError(SteepError):
    """A local service did not start or stop; the message says which and how to fix it."""


class PortInUseError(DaemonError):
    """A port the stack needs is taken by another program."""


@dataclass
class Service:
    """One local daemon: its command line, environment, and how to tell it is up."""

    name: str
    home: Path
    host: str
    port: int  # a Ray worker node: the head's GCS port, which it joins
    extra_ports: dict[str, int] = field(default_factory=dict)
    cpus: int | None = None  # Ray nodes: the CPUs it offers (none: this machine's)

    @property
    def is_ray_worker(self) -> bool:
        return is_ray_worker(self.name)

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / f"{self.name}.log"

    @property
    def data_dir(self) -> Path:
        return self.home / "stack" / self.name


def is_ray_worker(name: str) -> bool:
    prefix, _, index = name.rpartition("-")
    return prefix == RAY_WORKER and index.isdigit()


def ray_worker_names(count: int) -> list[str]:
    return [f"{RAY_WORKER}-{i}" for i in range(1, count + 1)]


def bin_path(script: str) -> str:
    """A console script of this interpreter's environment (the venv that runs steep)."""
    candidate = Path(sys.executable).parent / script
    return str(candidate) if candidate.exists() else script


def ray_temp_dir(home: Path) -> Path:
    """Ray's session folder; unix socket paths are limited to 107 bytes, so a long home gets a short alias."""
    wanted = home / "stack" / "ray"
    if len(str(wanted)) <= 40:
        return wanted
    digest = sha256(str(home).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"steep-ray-{digest}"


def command(svc: Service) -> list[str]:
    """The argv that runs the service in the foreground (we daemonize it ourselves)."""
    data = svc.data_dir
    if svc.name == "mlflow":
        return [
            bin_path("mlflow"), "server", "--host", svc.host, "--port", str(svc.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{data / 'mlflow.db'}",
            "--artifacts-destination", str(data / "artifacts"),
        ]  # fmt: skip
    if svc.name == "prefect":
        return [
            bin_path("prefect"),
            "server",
            "start",
            "--host",
            svc.host,
            "--port",
            str(svc.port),
            "--no-prompt",
        ]
    if svc.name == "ray" or svc.is_ray_worker:
        return ray_command(svc)
    raise DaemonError(f"unknown service {svc.name!r}; known: {', '.join(SERVICES)}, {RAY_WORKER}-<i>")


def ray_command(svc: Service) -> list[str]:
    """`ray start` of the head, or of a worker node joining it: a real raylet with its own CPUs and ports."""
    ports = svc.extra_ports
    cpus = svc.cpus if svc.cpus is not None else (os.cpu_count() or 1)
    argv = [bin_path("ray"), "start", "--block", "--disable-usage-stats", "--node-ip-address", svc.host,
            "--num-cpus", str(cpus), "--object-store-memory", str(1024**3),
            "--temp-dir", str(ray_temp_dir(svc.home))]  # fmt: skip
    if svc.is_ray_worker:
        argv += ["--address", f"{svc.host}:{svc.port}", "--labels", f"{NODE_LABEL}={svc.name}"]
    else:
        argv += ["--head", "--port", str(svc.port), "--labels", f"{NODE_LABEL}=ray",
                 "--include-dashboard", "true", "--dashboard-host", svc.host,
                 "--dashboard-port", str(ports.get("dashboard", 8265))]  # fmt: skip
    for flag in ("ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                 "metrics-export-port", "runtime-env-agent-port", "node-manager-port",
                 "object-manager-port"):  # fmt: skip
        if flag in ports and not (svc.is_ray_worker and flag == "ray-client-server-port"):  # head only
            argv += [f"--{flag}", str(ports[flag])]
    if "min-worker-port" in ports:
        argv += ["--min-worker-port", str(ports["min-worker-port"]), "--max-worker-port",
                 str(ports["min-worker-port"] + RAY_WORKER_PORTS - 1)]  # fmt: skip
    return argv


def environment(svc: Service) -> dict[str, str]:
    """The service's environment: quiet, writing only under the stack home, and carrying the marker."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "MLFLOW_TRACKING", "RAY_ADDRESS"))
    }
    env.update({**quiet.ENV, **_SERVER_ENV})
    env[MARKER] = str(svc.home)
    env["PREFECT_HOME"] = str(svc.data_dir) if svc.name == "prefect" else str(svc.home / "stack" / "prefect")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_UI_API_URL"] = f"http://{svc.host}:{svc.port}/api"
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = (
        f"sqlite+aiosqlite:///{svc.home / 'stack' / 'prefect' / 'prefect.db'}"
    )
    return env


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (we try to bind it, like the server will: with SO_REUSEADDR,
    so the closed connections of a lost node's servers, lingering in TIME_WAIT, do not hold its ports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free right now."""
    return free_ports(1, host)[0]


def free_ports(
    count: int, host: str = "127.0.0.1", avoid: Iterable[int] = (), stable: bool = False
) -> list[int]:
    """`count` different ports the OS considers free right now, none of them in `avoid`.

    Every socket stays bound until all are chosen: asking for one free port at a time can get the same port
    twice (CI saw Ray refuse a node-manager and a runtime-env-agent port that were equal). `stable` ports lie
    below the OS's ephemeral range, where no outgoing connection can take one between the choice and the
    start of the process that listens on it (CI saw a Ray worker node's port taken that way).
    """
    avoid = set(avoid)
    ports: list[int] = []
    top = ephemeral_low() - RAY_WORKER_PORTS  # a stable port may start a range of Ray worker ports
    with contextlib.ExitStack() as held:
        for _ in range(count * 200 if stable else count * 50):
            if len(ports) == count:
                break
            s = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                s.bind((host, random.randrange(STABLE_PORTS_FROM, top) if stable else 0))
            except OSError:
                continue
            port = int(s.getsockname()[1])
            if port not in avoid and port not in ports:
                ports.append(port)
    if len(ports) < count:
        raise OSError(f"found {len(ports)} of {count} free ports on {host}")
    return ports


def ephemeral_low() -> int:
    """The first port of the range the OS hands out to outgoing connections and to bind(port 0)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; macOS and Windows start higher


def is_up(svc: Service, timeout: float = 2.0) -> bool:
    """One health probe: HTTP health endpoints for MLflow and Prefect, the GCS port and dashboard for Ray,
    and for a Ray worker node its agent's raylet check (the agent starts once the node joined the head)."""
    try:
        if svc.is_ray_worker:
            agent = svc.extra_ports.get("dashboard-agent-listen-port", 52365)
            url = f"http://{svc.host}:{agent}/api/local_raylet_healthz"
            return httpx.get(url, timeout=timeout).status_code == 200
        if svc.name == "mlflow":
            return httpx.get(f"http://{svc.host}:{svc.port}/health", timeout=timeout).status_code == 200
        if svc.name == "prefect":
            return httpx.get(f"http://{svc.host}:{svc.port}/api/health", timeout=timeout).status_code == 200
        with socket.create_connection((svc.host, svc.port), timeout=timeout):
            pass
        dash = svc.extra_ports.get("dashboard", 8265)
        return httpx.get(f"http://{svc.host}:{dash}/api/version", timeout=timeout).status_code == 200
    except (httpx.HTTPError, OSError):
        return False


def read_pid(svc: Service) -> psutil.Process | None:
    """The running process recorded in the pid file, or None (no file, dead, or a recycled pid)."""
    try:
        info = json.loads(svc.pid_file.read_text())
        proc = psutil.Process(int(info["pid"]))
        if abs(proc.create_time() - float(info["create_time"])) > 1.0:
            return None
        return proc if proc.status() != psutil.STATUS_ZOMBIE else None
    except (FileNotFoundError, ValueError, KeyError, psutil.Error):
        return None


def running(home: Path, names: Iterable[str] = SERVICES) -> set[str]:
    """The services (of `names`) of this stack home whose pid file names a live process."""
    return {name for name in names if read_pid(Service(name, home, "", 0))}


def spawn(
    svc: Service,
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    ports: dict[str, int] | None = None,
) -> subprocess.Popen:
    """Start argv detached from this terminal, its output in the service's log, its pid file written.

    The one way steep starts a long-lived process (the stack's servers, the deploy worker, the watchdog):
    each carries the stack marker, so `stop()` and `sweep()` find it and whatever it spawned.
    """
    svc.run_dir.mkdir(parents=True, exist_ok=True)
    svc.log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**env, **marker_env(svc), "PYTHONUNBUFFERED": "1"}
    with open(svc.log_file, "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
            start_new_session=True,
        )  # fmt: skip
    record(svc, proc.pid, ports)
    return proc


def record(svc: Service, pid: int, ports: dict[str, int] | None = None) -> None:
    """Write the service's pid file: `stop()` finds the process (and what it spawned) by it, and the
    watchdog starts a lost Ray worker node again from what it says (`recorded`)."""
    svc.run_dir.mkdir(parents=True, exist_ok=True)
    info = {"pid": pid, "create_time": psutil.Process(pid).create_time(), "ports": ports or {},
            "host": svc.host, "cpus": svc.cpus}  # fmt: skip
    svc.pid_file.write_text(json.dumps(info))


def recorded(home: Path, name: str) -> Service | None:
    """The service as its pid file describes it (None: no pid file): what it takes to start it again."""
    try:
        info = json.loads(Service(name, home, "", 0).pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    ports = {k: int(v) for k, v in info.get("ports", {}).items()}
    port = ports.pop("port", 0)
    return Service(name, home, info.get("host", "127.0.0.1"), port, ports, info.get("cpus"))


def lost_ray_workers(home: Path) -> list[Service]:
    """Ray worker nodes that are gone while their pid file stands: lost like a machine, not stopped
    (`stop()` removes the pid file)."""
    names = sorted(p.stem for p in (home / "run").glob(f"{RAY_WORKER}-*.pid") if is_ray_worker(p.stem))
    found = [recorded(home, name) for name in names]
    return [svc for svc in found if svc is not None and read_pid(svc) is None]


def lose(svc: Service) -> int:
    """Take the node away as a lost machine goes: every process of it killed at once (a raylet killed alone
    leaves its workers running until the head notices), its pid file kept. -> processes killed."""
    procs = service_processes(svc)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=10)
    return len(procs)


def marker_env(svc: Service) -> dict[str, str]:
    """The environment that marks a process as this stack home's `svc`, for `stop()` and `sweep()`."""
    return {MARKER: str(svc.home), "STEEP_SERVICE": svc.name}


def start(svc: Service, timeout: float = 120.0) -> int:
    """Start the service unless it already runs; wait until healthy; on failure leave nothing behind.

    Ray worker nodes start one at a time: two `ray start` joining at once race for the same socket names
    in the shared session folder, and one never registers (Terraform creates them in parallel).
    """
    if not svc.is_ray_worker:
        return _start(svc, timeout)
    svc.run_dir.mkdir(parents=True, exist_ok=True)
    with open(svc.run_dir / "ray-nodes.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _start(svc, timeout)


def _start(svc: Service, timeout: float) -> int:
    running = read_pid(svc)
    if running is not None:
        return running.pid
    ports = {"port": svc.port, **svc.extra_ports}
    for key, port in ports.items():
        if not port_free(svc.host, port) and not (svc.is_ray_worker and key == "port"):
            setting = f"stack.local.{svc.name}_port" if key == "port" else "stack.local ports"
            raise PortInUseError(
                f"{svc.name}: {svc.host}:{port} ({key}) is already in use by another program; "
                f"stop it or choose another port ({setting} in steep.yaml)"
            )
    for folder in (svc.data_dir, svc.home / "stack" / "prefect"):
        folder.mkdir(parents=True, exist_ok=True)
    proc = spawn(svc, command(svc), environment(svc), cwd=svc.data_dir, ports=ports)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if is_up(svc):
            return proc.pid
        time.sleep(0.5)
    why = (
        f"exited with code {proc.returncode}"
        if proc.poll() is not None
        else f"not healthy after {timeout:.0f}s"
    )
    stop(svc)
    raise DaemonError(f"{svc.name} {why}; last lines of {svc.log_file}:\n{tail(svc.log_file)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def stack_processes(home: Path, service: str | None = None) -> list[psutil.Process]:
    """Every process that carries this stack's marker (optionally only one service's), except this one."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            env = proc.environ()
            if env.get(MARKER) == str(home) and (service is None or env.get("STEEP_SERVICE") == service):
                found.append(proc)
    return found


def terminate(procs: list[psutil.Process], grace: float = 15.0) -> None:
    """SIGINT first (Prefect stops cleanly on it), then SIGTERM, then SIGKILL for what is left."""
    alive = procs
    for sig, wait in ((signal.SIGINT, grace * 0.5), (signal.SIGTERM, grace * 0.5), (signal.SIGKILL, 5.0)):
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        _, alive = psutil.wait_procs(alive, timeout=wait)
        if not alive:
            return


def service_processes(svc: Service) -> list[psutil.Process]:
    """The service's process, what it spawned, and whatever else carries its marker."""
    leader = read_pid(svc)
    procs: list[psutil.Process] = []
    if leader is not None:
        with contextlib.suppress(psutil.Error):
            procs = [leader, *leader.children(recursive=True)]
    return procs + [p for p in stack_processes(svc.home, svc.name) if p.pid not in {q.pid for q in procs}]


def stop(svc: Service, grace: float = 15.0) -> bool:
    """Stop the service and every process it spawned; True when something was running. Idempotent."""
    procs = service_processes(svc)
    terminate(procs, grace)
    svc.pid_file.unlink(missing_ok=True)
    if svc.name == "ray" and not str(ray_temp_dir(svc.home)).startswith(str(svc.home)):
        shutil.rmtree(ray_temp_dir(svc.home), ignore_errors=True)  # the short alias lives outside home
    return bool(procs)


def sweep(home: Path) -> int:
    """Kill whatever process of the stack is still alive (the last line of defence of destroy)."""
    procs = stack_processes(home)
    terminate(procs, grace=6.0)
    return len(procs)


def service_from_args(args: argparse.Namespace) -> Service:
    extra = {}
    for item in args.extra_port or []:
        key, _, value = item.partition("=")
        extra[key] = int(value)
    if args.service not in SERVICES and not is_ray_worker(args.service):
        raise SystemExit(f"unknown service {args.service!r}; known: {', '.join(SERVICES)}, {RAY_WORKER}-<i>")
    return Service(args.service, Path(args.home).resolve(), args.host, args.port, extra, args.cpus)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the provisioners: `... --home H --port P [--extra-port k=v] start|stop SERVICE`."""
    parser = argparse.ArgumentParser(prog="python -m steep.stack.daemons")
    parser.add_argument("--home", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--extra-port", action="append", help="name=port, e.g. dashboard=8265")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--cpus", type=int, default=None, help="Ray nodes: CPUs the node offers")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("service", help=f"{', '.join(SERVICES)} or {RAY_WORKER}-<i>")
    args = parser.parse_args(argv)
    svc = service_from_args(args)
    os.environ["STEEP_SERVICE"] = svc.name  # inherited by the daemon: lets stop find every process it spawned
    try:
        if args.action == "start":
            pid = start(svc, args.timeout)
            where = "joined the head at" if svc.is_ray_worker else "up on"
            print(f"{svc.name} {where} {svc.host}:{svc.port} (pid {pid})")
        else:
            print(f"{svc.name} {'stopped' if stop(svc) else 'was not running'}")
    except SteepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
