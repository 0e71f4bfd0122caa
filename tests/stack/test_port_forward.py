"""Reaching a cloud stack from this machine: the record's reach section, the kubeconfig context, and
port-forwards whose socket pump and listeners run on real sockets against real servers.

No Kubernetes API server can run here: the one test of the Kubernetes client's own port-forward calls
(`kube_connector`) talks to a stand-in API server (tests/stack/fake_kube_api.py) that speaks the same REST
and websocket port-forward protocol; what a real cluster adds (RBAC, exec auth plugins, pod churn) stays
unverified.
"""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import hcl2
import httpx
import pytest
import yaml
from kubernetes.client import (
    V1Container,
    V1ContainerPort,
    V1ObjectMeta,
    V1Pod,
    V1PodCondition,
    V1PodSpec,
    V1PodStatus,
    V1Service,
    V1ServicePort,
    V1ServiceSpec,
)

from steep.config import load_config
from steep.endpoints import Runtime
from steep.stack import port_forward
from steep.stack.contract import Stack, StackError
from steep.stack.record import current, read_record, write_record
from steep.stack.terraform import terraform_sources
from tests.stack.fake_kube_api import FakeKubeApi

CLOUD_OUTPUTS = {
    "target": "aws",
    "created_at": "2026-01-01T00:00:00+00:00",
    "mlflow_tracking_uri": "http://mlflow.steep.svc.cluster.local:5000",
    "prefect_api_url": "http://prefect-server.steep.svc.cluster.local:4200/api",
    "ray_address": "ray://ray-kuberay-head-svc.steep.svc.cluster.local:10001",
    "ray_dashboard_url": "http://ray-kuberay-head-svc.steep.svc.cluster.local:8265",
    "serving_url": "k8s://steep-7f3a/steep-serving",
    "artifact_uri": "s3://steep-artifacts-7f3a/mlflow",
    "work_pool": "steep-k8s",
    "namespace": "steep-serving",
}
LOCAL_OUTPUTS = {
    "target": "local",
    "created_at": "2026-01-01T00:00:00+00:00",
    "mlflow_tracking_uri": "http://127.0.0.1:5000",
    "prefect_api_url": "http://127.0.0.1:4200/api",
    "ray_address": "127.0.0.1:6379",
    "ray_dashboard_url": "http://127.0.0.1:8265",
    "serving_url": "http://127.0.0.1:3000",
    "artifact_uri": "file:///somewhere/artifacts",
    "work_pool": "steep-process",
    "namespace": None,
}


@pytest.fixture(autouse=True)
def _no_open_forwards(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield
    port_forward.close_all()


def _stack(outputs: dict) -> Stack:
    fields = ("mlflow_tracking_uri", "artifact_uri", "prefect_api_url", "ray_address", "serving_url",
              "target", "created_at")  # fmt: skip
    return Stack(**{k: outputs[k] for k in fields}, outputs=dict(outputs), reach=port_forward.plan(outputs))


# --------------------------------------------------------------------------------------------- the plan
def test_the_plan_of_a_cloud_stack_names_each_service_and_port() -> None:
    section = port_forward.plan(CLOUD_OUTPUTS)
    assert section["mode"] == "port-forward" and section["cluster"] == "steep-7f3a"
    eps = port_forward.endpoints_of(section)
    assert eps["mlflow_tracking_uri"] == port_forward.Endpoint("steep", "mlflow", 5000, "http", "")
    assert eps["prefect_api_url"] == port_forward.Endpoint("steep", "prefect-server", 4200, "http", "/api")
    assert eps["ray_address"] == port_forward.Endpoint("steep", "ray-kuberay-head-svc", 10001, "ray", "")
    assert eps["ray_dashboard_url"].port == 8265
    assert eps["serving_url"] == port_forward.Endpoint("steep-serving", None, 0)  # the steep-labelled Service
    assert eps["prefect_api_url"].url("127.0.0.1", 4321) == "http://127.0.0.1:4321/api"


def test_the_local_target_is_reached_directly() -> None:
    assert port_forward.plan(LOCAL_OUTPUTS) == {"mode": "direct"}
    stack = _stack(LOCAL_OUTPUTS)
    assert port_forward.reachable(stack) is stack


def _resolved_outputs(root: str) -> dict[str, str]:
    """A cloud root's outputs with locals and module outputs inlined and every other reference a name."""
    src = terraform_sources()
    platform = src / "modules" / "platform"

    def blocks(folder: Path, kind: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for file in sorted(folder.glob("*.tf")):
            for block in hcl2.loads(file.read_text()).get(kind, []):
                for name, body in block.items():
                    value = body["value"] if kind == "output" else body
                    if name != "__is_block__":
                        found[name.strip('"')] = str(value).strip('"')
        return found

    local = blocks(platform, "locals")
    module = blocks(platform, "output")

    def resolve(text: str) -> str:
        for _ in range(10):
            text = re.sub(r"\$\{local\.(\w+)\}", lambda m: local[m[1]], text)
            text = re.sub(r"\$\{module\.platform\.(\w+)\}", lambda m: module[m[1]], text)
        return re.sub(r"\$\{[^}]*\}", "steep", text)

    return {k: resolve(v) for k, v in blocks(src / root, "output").items()}


@pytest.mark.parametrize("root", ["aws", "gcp", "azure"])
def test_every_cloud_root_exports_addresses_reach_can_forward(root: str) -> None:
    outputs = _resolved_outputs(root)
    section = port_forward.plan(outputs)
    assert section["mode"] == "port-forward"
    forwarded = set(section["endpoints"])
    assert forwarded == {*port_forward.FORWARDED, port_forward.SERVING}, f"{root}: not forwardable: {outputs}"
    assert section["cluster"] == "steep"


# --------------------------------------------------------------------------------------------- the record
def test_the_record_keeps_the_reach_section_and_the_cluster_context(
    stack_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(_kubeconfig(["arn:aws:eks:eu-west-1:123:cluster/steep-7f3a", "other"]))
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    stack_home.mkdir(parents=True)
    write_record(stack_home, CLOUD_OUTPUTS, None, None)
    section = read_record(stack_home)["reach"]
    assert section["mode"] == "port-forward"
    assert section["context"] == "ctx-0"  # the context whose cluster is the stack's
    assert section["endpoints"]["mlflow_tracking_uri"] == {
        "namespace": "steep", "service": "mlflow", "port": 5000, "scheme": "http", "path": ""
    }  # fmt: skip
    stack = current(stack_home)
    assert stack is not None and stack.reach == section
    assert stack.mlflow_tracking_uri == CLOUD_OUTPUTS["mlflow_tracking_uri"]  # as recorded: for pods


def test_a_record_without_a_kubeconfig_keeps_no_context(
    stack_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    stack_home.mkdir(parents=True)
    write_record(stack_home, CLOUD_OUTPUTS, None, None)
    assert read_record(stack_home)["reach"]["context"] is None
    write_record(stack_home, LOCAL_OUTPUTS, None, None)
    assert read_record(stack_home)["reach"] == {"mode": "direct"}


def _kubeconfig(clusters: list[str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": c, "cluster": {"server": "https://k8s.invalid"}} for c in clusters],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {"name": f"ctx-{i}", "context": {"cluster": c, "user": "u"}} for i, c in enumerate(clusters)
        ],
        "current-context": "ctx-0",
    }


# --------------------------------------------------------------------------------------------- contexts
@pytest.mark.parametrize(
    "cluster_entry",
    [
        "arn:aws:eks:us-east-1:123456789012:cluster/steep-7f3a",  # aws eks update-kubeconfig
        "gke_my-project_europe-west4_steep-7f3a",  # gcloud container clusters get-credentials
        "steep-7f3a",  # az aks get-credentials
    ],
)
def test_the_context_of_each_clouds_cli_is_found(cluster_entry: str) -> None:
    contexts = [
        {"name": "prod", "context": {"cluster": "arn:aws:eks:us-east-1:1:cluster/steep-7f3ab"}},
        {"name": "mine", "context": {"cluster": cluster_entry}},
    ]
    assert port_forward.find_context(contexts, "steep-7f3a") == "mine"
    assert port_forward.find_context(contexts[:1], "steep-7f3a") is None


def test_two_contexts_for_one_cluster_ask_for_stack_kube_context() -> None:
    contexts = [{"name": n, "context": {"cluster": "steep-7f3a"}} for n in ("a", "b")]
    with pytest.raises(StackError, match=r"a, b; choose one with stack.kube_context"):
        port_forward.find_context(contexts, "steep-7f3a")


def test_no_context_names_the_clouds_get_credentials_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    section = port_forward.plan(CLOUD_OUTPUTS)
    with pytest.raises(StackError, match=r"aws eks update-kubeconfig --name steep-7f3a --region eu-west-1"):
        port_forward.resolve_context(section, "aws", region="eu-west-1")
    assert port_forward.resolve_context(section, "aws", override="given") == "given"
    assert port_forward.resolve_context({**section, "context": "recorded"}, "aws") == "recorded"


# --------------------------------------------------------------------------------------------- sockets
def test_pump_copies_both_ways_and_passes_on_a_half_close() -> None:
    a_user, a = socket.socketpair()
    b, b_user = socket.socketpair()
    result: list[tuple[int, int]] = []
    thread = threading.Thread(target=lambda: result.append(port_forward.pump(a, b)))
    thread.start()
    payload = bytes(range(256)) * 4096  # 1 MiB: more than one recv
    sender = threading.Thread(target=a_user.sendall, args=(payload,))
    sender.start()
    got = b""
    while len(got) < len(payload):
        got += b_user.recv(65536)
    sender.join()
    assert got == payload
    b_user.sendall(b"answer")
    assert a_user.recv(100) == b"answer"
    a_user.shutdown(socket.SHUT_WR)  # the client is done sending: the far side sees end of input
    assert b_user.recv(10) == b""
    b_user.sendall(b"late reply")  # ... and can still answer
    assert a_user.recv(100) == b"late reply"
    b_user.close()
    thread.join(5)
    assert not thread.is_alive() and result == [(len(payload), len(b"answer") + len(b"late reply"))]


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "server": self.server.server_address[1]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_forward_tunnels_http_and_survives_a_failed_connect(http_server: ThreadingHTTPServer) -> None:
    port = http_server.server_address[1]
    attempts: list[int] = []

    def connect() -> socket.socket:
        attempts.append(1)
        if len(attempts) == 1:
            raise StackError("no ready pod behind service steep/mlflow")
        return socket.create_connection(("127.0.0.1", port))

    forward = port_forward.Forward("mlflow", connect)
    try:
        with pytest.raises(httpx.HTTPError):  # the first connection fails: closed, reason kept
            httpx.get(f"http://127.0.0.1:{forward.port}/health", timeout=5)
        assert forward.errors == ["cannot forward mlflow: no ready pod behind service steep/mlflow"]
        with httpx.Client(base_url=f"http://127.0.0.1:{forward.port}", timeout=5) as client:
            for i in range(3):  # keep-alive: several requests over one tunnelled connection
                assert client.get(f"/api/{i}").json() == {"path": f"/api/{i}", "server": port}
    finally:
        forward.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", forward.port), timeout=2).recv(1)


def test_small_writes_are_not_held_back_by_nagle() -> None:
    """A server answering in two small writes (head, then body), as HTTP servers do: without TCP_NODELAY
    on the forward's sockets each round trip waits for a delayed ACK (~40 ms; MLflow calls measured 110 ms
    through the forward against 25 ms direct)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while conn.recv(100):
            conn.sendall(b"head")
            time.sleep(0.002)
            conn.sendall(b"body")
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    forward = port_forward.Forward("x", lambda: socket.create_connection(listener.getsockname()))
    client = socket.create_connection(("127.0.0.1", forward.port))
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rounds = []
    try:
        for _ in range(15):
            started = time.perf_counter()
            client.sendall(b"ask")
            got = b""
            while len(got) < 8:
                got += client.recv(100)
            rounds.append(time.perf_counter() - started)
    finally:
        client.close()
        forward.close()
        listener.close()
    assert statistics.median(rounds) < 0.02, f"median round trip {statistics.median(rounds) * 1000:.0f} ms"


def test_reachable_rewrites_every_address_to_a_local_forward(http_server: ThreadingHTTPServer) -> None:
    port = http_server.server_address[1]
    seen: list[port_forward.Endpoint] = []

    def connect(endpoint: port_forward.Endpoint) -> socket.socket:
        seen.append(endpoint)
        return socket.create_connection(("127.0.0.1", port))

    record = _stack(CLOUD_OUTPUTS)
    stack = port_forward.reachable(record, connector=connect)
    assert stack is not None and stack is not record
    for name in (*port_forward.FORWARDED, port_forward.SERVING):
        assert re.fullmatch(r"(http|ray)://127\.0\.0\.1:\d+(/api)?", stack.outputs[name]), name
    assert stack.prefect_api_url.endswith("/api") and stack.ray_address.startswith("ray://127.0.0.1:")
    assert stack.serving_url == stack.outputs["serving_url"] and stack.serving_url.startswith("http://")
    assert stack.outputs["artifact_uri"] == CLOUD_OUTPUTS["artifact_uri"]  # not a service: unchanged
    assert httpx.get(f"{stack.prefect_api_url}/health", timeout=5).json()["path"] == "/api/health"
    assert seen == [port_forward.Endpoint("steep", "prefect-server", 4200, "http", "/api")]
    assert port_forward.reachable(record, connector=connect) is stack  # one set of forwards per process
    assert port_forward.opened(record) is stack


def test_inside_the_cluster_the_recorded_addresses_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    record = _stack(CLOUD_OUTPUTS)
    assert port_forward.reachable(record) is record


def test_runtime_clients_use_the_forwards_and_pods_the_record(
    http_server: ThreadingHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    port = http_server.server_address[1]
    cfg = load_config(None, [f"project.home={tmp_path / '.steep'}"], environ={})
    record = _stack(CLOUD_OUTPUTS)
    reached = port_forward.reachable(
        record, connector=lambda e: socket.create_connection(("127.0.0.1", port))
    )
    runtime = Runtime(cfg, record)
    assert runtime.stack is reached and runtime.record is record
    assert runtime.tracking_uri == reached.mlflow_tracking_uri != record.mlflow_tracking_uri
    assert runtime.ray_address.startswith("ray://127.0.0.1:")
    runtime.use_prefect()
    assert os.environ["PREFECT_API_URL"] == reached.prefect_api_url
    Runtime(cfg, record).use_prefect(stack_api=False)  # the teardown: the forwarded API is dropped too
    assert "PREFECT_API_URL" not in os.environ


def test_a_cloud_stack_without_the_kubernetes_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_kubernetes(name: str, *args: object, **kwargs: object) -> object:
        if name == "kubernetes" or name.startswith("kubernetes."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_kubernetes)
    with pytest.raises(StackError, match=r"pip install 'steep\[cloud\]'"):
        port_forward.reachable(_stack(CLOUD_OUTPUTS))


# --------------------------------------------------------------------------------------------- Kubernetes
def _service(target_port: int | str | None = "http") -> V1Service:
    return V1Service(
        metadata=V1ObjectMeta(name="mlflow", namespace="steep"),
        spec=V1ServiceSpec(
            selector={"app": "mlflow"}, ports=[V1ServicePort(port=5000, target_port=target_port)]
        ),
    )


def _pod(name: str, ready: bool = True, phase: str = "Running") -> V1Pod:
    return V1Pod(
        metadata=V1ObjectMeta(name=name, namespace="steep"),
        spec=V1PodSpec(
            containers=[V1Container(name="c", ports=[V1ContainerPort(container_port=5001, name="http")])]
        ),
        status=V1PodStatus(phase=phase, conditions=[V1PodCondition(type="Ready", status=str(ready))]),
    )


def test_the_forward_goes_to_a_ready_pod_and_its_target_port() -> None:
    pods = [_pod("mlflow-b"), _pod("mlflow-a", ready=False), _pod("mlflow-c", phase="Pending")]
    assert port_forward.choose_pod(_service("http"), pods, 5000) == ("mlflow-b", 5001)  # named target port
    assert port_forward.choose_pod(_service(8080), pods, 5000) == ("mlflow-b", 8080)
    assert port_forward.choose_pod(_service(None), pods, 0) == ("mlflow-b", 5000)  # first port, no target
    with pytest.raises(StackError, match=r"no ready pod behind service steep/mlflow .*-l app=mlflow"):
        port_forward.choose_pod(_service(), pods[1:], 5000)
    with pytest.raises(StackError, match="has no port 80"):
        port_forward.choose_pod(_service(), pods, 80)


def test_kube_connector_forwards_through_the_kubernetes_api(
    http_server: ThreadingHTTPServer, tmp_path: Path
) -> None:
    """The Kubernetes client's REST calls and websocket port-forward protocol, against a stand-in API
    server that relays the pod's port to a real HTTP server."""
    with FakeKubeApi(pod_port_target=http_server.server_address[1]) as api:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(api.kubeconfig("steep-ctx")))
        connect = port_forward.kube_connector("steep-ctx", config_file=str(kubeconfig))
        endpoint = port_forward.Endpoint("steep", "mlflow", 5000)
        with port_forward.Tunnels({"mlflow": endpoint}, connect) as tunnels:
            url = tunnels.urls()["mlflow"]
            with httpx.Client(base_url=url, timeout=10) as client:
                assert client.get("/api/2.0/mlflow/experiments/search").json()["path"] == (
                    "/api/2.0/mlflow/experiments/search"
                )
        assert api.forwarded == [("steep", "mlflow-0", 5000)]  # the pod behind the Service, its port


def test_what_reach_forwards_is_part_of_the_stack_contract() -> None:
    from steep.stack.contract import OUTPUTS

    assert {*port_forward.FORWARDED, port_forward.SERVING} <= set(OUTPUTS)


@pytest.mark.integration
def test_a_real_mlflow_server_through_the_forward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's client (runs, metrics, artifacts proxied by the server) through a port-forward, as
    `steep run` and `steep models` use it against a cloud stack."""
    from mlflow import MlflowClient

    from steep.stack import daemons

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    svc = daemons.Service("mlflow", tmp_path / "mlflow", "127.0.0.1", daemons.free_port())
    daemons.start(svc)
    try:
        seen: list[str] = []

        def connect(endpoint: port_forward.Endpoint) -> socket.socket:
            seen.append(endpoint.service or "")
            return socket.create_connection((svc.host, svc.port))

        stack = port_forward.reachable(_stack(CLOUD_OUTPUTS), connector=connect)
        assert stack is not None
        client = MlflowClient(stack.mlflow_tracking_uri)
        run = client.create_run(client.create_experiment("through-a-forward"))
        client.log_metric(run.info.run_id, "rouge_l", 23.5)
        artifact = tmp_path / "eval.json"
        artifact.write_text('{"rouge_l": 23.5}')
        client.log_artifact(run.info.run_id, str(artifact), "eval")
        client.set_terminated(run.info.run_id)
        again = client.get_run(run.info.run_id)
        assert again.data.metrics == {"rouge_l": 23.5} and again.info.status == "FINISHED"
        assert [f.path for f in client.list_artifacts(run.info.run_id, "eval")] == ["eval/eval.json"]
        assert seen and set(seen) == {"mlflow"}
    finally:
        daemons.stop(svc)
