"""The daemon helper: command lines, the stack marker, and stopping everything a service spawned."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from steep.stack import daemons


def test_commands_bind_to_the_host_and_keep_data_under_home(tmp_path: Path) -> None:
    mlflow = daemons.command(daemons.Service("mlflow", tmp_path, "127.0.0.1", 5123))
    assert mlflow[1:3] == ["server", "--host"] and "5123" in mlflow
    assert f"sqlite:///{tmp_path / 'stack' / 'mlflow' / 'mlflow.db'}" in mlflow
    ray = daemons.command(
        daemons.Service("ray", tmp_path, "127.0.0.1", 6400, {"dashboard": 8300, "min-worker-port": 20000})
    )
    assert "--block" in ray and ray[ray.index("--dashboard-port") + 1] == "8300"
    assert ray[ray.index("--max-worker-port") + 1] == "20099"
    env = daemons.environment(daemons.Service("prefect", tmp_path, "127.0.0.1", 4300))
    assert env[daemons.MARKER] == str(tmp_path) and env["PREFECT_HOME"] == str(tmp_path / "stack" / "prefect")
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false" and env["RAY_AUTH_MODE"] == "disabled"
    with pytest.raises(daemons.DaemonError, match="unknown service"):
        daemons.command(daemons.Service("nginx", tmp_path, "127.0.0.1", 1))


def test_ray_temp_dir_stays_short_enough_for_unix_sockets(tmp_path: Path) -> None:
    long_home = tmp_path / ("x" * 80)
    assert len(str(daemons.ray_temp_dir(long_home))) <= 45
    assert daemons.ray_temp_dir(long_home) == daemons.ray_temp_dir(long_home)
    assert daemons.ray_temp_dir(Path("/h")) == Path("/h/stack/ray")


def _spawn_tree(home: Path, service: str) -> subprocess.Popen:
    """A 'service' that forks a grandchild in its own session, like Ray's raylet does."""
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)\n"
        "time.sleep(120)\n"
    )
    env = {**os.environ, daemons.MARKER: str(home), "STEEP_SERVICE": service}
    return subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)


def test_stop_kills_the_whole_tree_and_is_idempotent(tmp_path: Path) -> None:
    svc = daemons.Service("prefect", tmp_path, "127.0.0.1", 0)
    proc = _spawn_tree(tmp_path, "prefect")
    svc.run_dir.mkdir(parents=True)
    svc.pid_file.write_text(
        json.dumps({"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time()})
    )
    deadline = time.monotonic() + 10
    while len(daemons.stack_processes(tmp_path)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(daemons.stack_processes(tmp_path, "prefect")) == 2
    assert daemons.read_pid(svc).pid == proc.pid
    assert daemons.stop(svc, grace=2) is True
    proc.wait(timeout=5)
    assert daemons.stack_processes(tmp_path) == [] and not svc.pid_file.exists()
    assert daemons.stop(svc) is False


def test_sweep_leaves_other_stacks_alone(tmp_path: Path) -> None:
    mine, other = _spawn_tree(tmp_path / "a", "ray"), _spawn_tree(tmp_path / "b", "ray")
    try:
        time.sleep(1.0)
        assert daemons.sweep(tmp_path / "a") == 2
        assert daemons.stack_processes(tmp_path / "a") == []
        assert len(daemons.stack_processes(tmp_path / "b")) == 2
    finally:
        daemons.sweep(tmp_path / "b")
        for p in (mine, other):
            p.wait(timeout=10)


def test_a_recycled_pid_is_not_taken_for_the_service(tmp_path: Path) -> None:
    svc = daemons.Service("mlflow", tmp_path, "127.0.0.1", 0)
    svc.run_dir.mkdir(parents=True)
    svc.pid_file.write_text(json.dumps({"pid": os.getpid(), "create_time": 1.0}))
    assert daemons.read_pid(svc) is None


def test_start_refuses_a_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        svc = daemons.Service("mlflow", tmp_path, "127.0.0.1", port)
        with pytest.raises(daemons.PortInUseError, match=rf"127.0.0.1:{port} \(port\) is already in use"):
            daemons.start(svc, timeout=5)
        assert daemons.main(["--home", str(tmp_path), "--port", str(port), "start", "mlflow"]) == 2
    assert not svc.pid_file.exists()


def test_free_ports_are_distinct_and_skip_the_ones_to_avoid():
    taken = daemons.free_ports(40)
    assert len(set(taken)) == 40
    again = daemons.free_ports(40, avoid=taken[:20])
    assert len(set(again)) == 40 and not set(again) & set(taken[:20])


def test_stable_ports_lie_below_the_range_outgoing_connections_take_theirs_from():
    """A Ray port drawn with bind(0) was taken by another process's connection before Ray started (CI)."""
    with socket.socket() as outgoing:  # an ephemeral port, as a connection would get one
        outgoing.bind(("127.0.0.1", 0))
        ephemeral = outgoing.getsockname()[1]
    assert ephemeral >= daemons.ephemeral_low()
    stable = daemons.free_ports(30, stable=True, avoid={ephemeral})
    assert len(set(stable)) == 30
    assert all(
        daemons.STABLE_PORTS_FROM <= p < daemons.ephemeral_low() - daemons.RAY_WORKER_PORTS for p in stable
    )
    assert all(daemons.port_free("127.0.0.1", p) for p in stable)


def test_a_lost_node_keeps_its_pid_file_so_the_watchdog_starts_it_as_recorded(tmp_path: Path) -> None:
    """`lose` is a machine going (SIGKILL to the whole tree, its record kept); `stop` an order (removed)."""
    svc = daemons.Service("ray-worker-2", tmp_path, "127.0.0.1", 6399, {"node-manager-port": 21001}, cpus=1)
    proc = _spawn_tree(tmp_path, svc.name)
    daemons.record(svc, proc.pid, {"port": svc.port, **svc.extra_ports})
    assert daemons.recorded(tmp_path, svc.name) == svc  # host, head port, own ports and CPUs, as started
    assert daemons.lost_ray_workers(tmp_path) == []
    deadline = time.monotonic() + 10
    while len(daemons.stack_processes(tmp_path, svc.name)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert daemons.lose(svc) == 2
    assert not psutil.pid_exists(proc.pid) and daemons.stack_processes(tmp_path) == []
    assert daemons.lost_ray_workers(tmp_path) == [svc] and svc.pid_file.exists()
    daemons.stop(svc)  # stopped on purpose: nothing to bring back
    assert daemons.lost_ray_workers(tmp_path) == [] and daemons.recorded(tmp_path, svc.name) is None


def test_a_port_whose_server_is_gone_is_free_though_its_connections_linger() -> None:
    """A lost node's servers closed connections first: TIME_WAIT holds their ports, but a new server (which
    binds with SO_REUSEADDR, as gRPC and aiohttp do) gets them; only a listener makes a port busy."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Ray's gRPC servers do
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    assert not daemons.port_free("127.0.0.1", port)  # listening
    accepted.close()  # the server side closes first: its end of the connection waits in TIME_WAIT
    server.close()
    client.close()
    assert daemons.port_free("127.0.0.1", port)
