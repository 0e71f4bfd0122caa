"""Reaching a stack's services from this machine: as recorded on the local target, port-forwards on a cloud.

A cloud stack's outputs are in-cluster addresses (`http://mlflow.steep.svc.cluster.local:5000`) that only
pods resolve. steep reaches them the way `kubectl port-forward` does: one listener on 127.0.0.1 per
service, each connection tunnelled through the Kubernetes API (a websocket to a ready pod behind the
Service) with the user's kubeconfig context. The forwards open on first use and live as long as the command.

Security: nothing is exposed publicly and nothing new needs securing. Whoever may open the services is
whoever the cluster's RBAC lets port-forward in the platform and serving namespaces (`pods/portforward`),
authenticated by the user's own cloud credentials; the traffic rides the API server's TLS. The alternative,
an authenticated ingress, puts a public endpoint in front of MLflow, Prefect and Ray, none of which
authenticates by itself (Ray's job API is code execution on the cluster), so it needs TLS certificates, DNS
and an auth proxy kept up to date, and is an attack surface while the stack is up. It would suit a team that
shares a stack better than one user's machine; it can come later behind the same `reachable` door.

`reachable(stack)` is that door: every command that talks to the stack (`steep.endpoints.Runtime.stack`,
`steep status`, the drift sender, the idle watchdog) takes its URLs from it. What pods are given (the
serving manifests, flow-run job variables) stays the recorded in-cluster address.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from steep.stack.contract import Stack, StackError

log = logging.getLogger("steep.stack.port_forward")

LOCALHOST = "127.0.0.1"
# outputs that carry in-cluster addresses on a cloud target (the Stack fields and ray_dashboard_url)
FORWARDED = ("mlflow_tracking_uri", "prefect_api_url", "ray_address", "ray_dashboard_url")
SERVING = "serving_url"  # on a cloud: k8s://<cluster>/<namespace>, the namespace `steep serve` deploys to
SERVING_LABEL = "app.kubernetes.io/part-of=steep"  # the Service steep's serving manifests create
_IN_CLUSTER = re.compile(
    r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<service>[a-z0-9-]+)\.(?P<namespace>[a-z0-9-]+)"
    r"\.svc(?:\.cluster\.local)?:(?P<port>\d+)(?P<path>/.*)?$"
)
_K8S_NAMESPACE = re.compile(r"^k8s://(?P<cluster>[^/]+)/(?P<namespace>[a-z0-9-]+)$")
CREDENTIALS = {  # how to get a kubeconfig context for the cluster, by target
    "aws": "aws eks update-kubeconfig --name {cluster} --region {region}",
    "gcp": "gcloud container clusters get-credentials {cluster} --region {region}",
    "azure": "az aks get-credentials --name {cluster} --resource-group <the stack's resource group>",
}
CLOUD_EXTRA = "pip install 'steep[cloud]'"


# --------------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Endpoint:
    """An in-cluster service: a Service (None: the one labelled SERVING_LABEL), its port (0: its first)."""

    namespace: str
    service: str | None
    port: int
    scheme: str = "http"
    path: str = ""

    def url(self, host: str, port: int) -> str:
        return f"{self.scheme}://{host}:{port}{self.path}"

    def describe(self) -> str:
        name = f"service/{self.service}" if self.service else f"the Service labelled {SERVING_LABEL}"
        return f"{name} port {self.port or '(first)'} in namespace {self.namespace}"


def in_cluster_endpoint(url: str | None) -> Endpoint | None:
    """`http://svc.ns.svc.cluster.local:5000/path` -> its Endpoint; None for an address this machine opens."""
    match = _IN_CLUSTER.match(url or "")
    if match is None:
        return None
    return Endpoint(match["namespace"], match["service"], int(match["port"]), match["scheme"],
                    (match["path"] or "").rstrip("/"))  # fmt: skip


def plan(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The record's `reach` section: how this machine gets to each service these outputs name.

    {"mode": "direct"} when every address is one this machine opens (the local target); else the
    port-forwards: the cluster (for the kubeconfig context), and per output the Service and port.
    """
    endpoints: dict[str, Endpoint] = {}
    for name in FORWARDED:
        endpoint = in_cluster_endpoint(outputs.get(name))
        if endpoint is not None:
            endpoints[name] = endpoint
    serving = _K8S_NAMESPACE.match(str(outputs.get(SERVING) or ""))
    if serving:
        endpoints[SERVING] = Endpoint(serving["namespace"], None, 0)
    if not endpoints:
        return {"mode": "direct"}
    return {
        "mode": "port-forward",
        "cluster": serving["cluster"] if serving else None,
        "context": None,
        "endpoints": {name: asdict(e) for name, e in endpoints.items()},
    }


def endpoints_of(section: Mapping[str, Any]) -> dict[str, Endpoint]:
    return {name: Endpoint(**spec) for name, spec in (section.get("endpoints") or {}).items()}


# --------------------------------------------------------------------------------------------- kubeconfig
def _names_cluster(context: Mapping[str, Any], cluster: str) -> bool:
    """A kubeconfig context for `cluster` as each cloud's CLI names it: EKS an ARN ending in /<name>,
    GKE gke_<project>_<location>_<name>, AKS the name itself."""
    entry = str((context.get("context") or {}).get("cluster") or "")
    return cluster in (entry, context.get("name")) or entry.endswith((f"/{cluster}", f"_{cluster}"))


def find_context(contexts: list[dict[str, Any]], cluster: str) -> str | None:
    """The one kubeconfig context of `cluster`; None when there is none; StackError when several."""
    names = [str(c["name"]) for c in contexts if _names_cluster(c, cluster)]
    if len(names) > 1:
        raise StackError(
            f"several kubeconfig contexts are for cluster {cluster}: {', '.join(names)}; "
            "choose one with stack.kube_context in steep.yaml"
        )
    return names[0] if names else None


def kube_contexts(config_file: str | None = None) -> list[dict[str, Any]]:
    """The contexts of the user's kubeconfig ($KUBECONFIG or ~/.kube/config); [] when there is none."""
    k8s_config = require_kubernetes().config
    try:
        contexts, _ = k8s_config.list_kube_config_contexts(config_file=config_file or _kubeconfig())
    except (k8s_config.ConfigException, OSError):
        return []
    return list(contexts or [])


def resolve_context(section: Mapping[str, Any], target: str, override: str | None = None,
                    region: str | None = None) -> str:  # fmt: skip
    """The kubeconfig context to reach the stack with: steep.yaml's, the record's, else the cluster's own."""
    if override:
        return override
    if section.get("context"):
        return str(section["context"])
    cluster = section.get("cluster")
    found = find_context(kube_contexts(), cluster) if cluster else None
    if found:
        return found
    how = CREDENTIALS.get(target, "your cloud's get-credentials command").format(
        cluster=cluster or "<cluster>", region=region or "<region>"
    )
    raise StackError(
        f"no kubeconfig context for the {target} cluster {cluster or '(unknown)'}: steep reaches the stack's "
        f"services through it. Add one with `{how}`, or name an existing one in stack.kube_context"
    )


def _kubeconfig() -> str | None:
    """$KUBECONFIG as it is now (the client reads it once, at import), else the client's default."""
    return os.environ.get("KUBECONFIG") or None


def require_kubernetes() -> Any:
    try:
        import kubernetes
    except ImportError:
        raise StackError(
            f"reaching a cloud stack from this machine needs the Kubernetes client: {CLOUD_EXTRA}"
        ) from None
    import kubernetes.config

    return kubernetes


# --------------------------------------------------------------------------------------------- sockets
def pump(a: socket.socket, b: socket.socket, bufsize: int = 65536) -> tuple[int, int]:
    """Copy bytes both ways until both directions have ended; -> (bytes a->b, bytes b->a).

    An end of input on one side is passed on as a half-close of the other; an error on either side ends
    both directions (so neither blocks on a peer that is gone). Closes neither socket.
    """
    counts = [0, 0]

    def copy(src: socket.socket, dst: socket.socket, i: int) -> None:
        try:
            while data := src.recv(bufsize):
                dst.sendall(data)
                counts[i] += len(data)
        except OSError:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            return
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    back = threading.Thread(target=copy, args=(b, a, 1), name="steep-forward-back", daemon=True)
    back.start()
    copy(a, b, 0)
    back.join()
    return counts[0], counts[1]


class Forward:
    """A listener on 127.0.0.1 whose every connection `connect()` tunnels to one remote endpoint.

    A failed connect closes that one connection, keeps the reason in `errors` and logs it; the next
    connection tries again (a pod may have been replaced meanwhile).
    """

    def __init__(self, name: str, connect: Callable[[], socket.socket], host: str = LOCALHOST) -> None:
        self.name = name
        self.connect = connect
        self.errors: list[str] = []
        self._listener = socket.create_server((host, 0))
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name=f"steep-forward-{name}", daemon=True).start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            remote = self.connect()
        except Exception as exc:
            reason = f"cannot forward {self.name}: {exc}"
            self.errors.append(reason)
            log.error("%s", reason)
            conn.close()
            return
        for sock in (conn, remote):  # no Nagle delay on small writes (an HTTP request's head, then body)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self._closed:
                conn.close()
                remote.close()
                return
            self._open |= {conn, remote}
        try:
            pump(conn, remote)
        finally:
            with self._lock:
                self._open -= {conn, remote}
            conn.close()
            remote.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            live = list(self._open)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the listening thread
        self._listener.close()
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Tunnels:
    """The forwards of one stack, one per endpoint: `urls()` replace the in-cluster addresses."""

    def __init__(self, endpoints: Mapping[str, Endpoint], connect: Callable[[Endpoint], socket.socket]):
        self.endpoints = dict(endpoints)
        self.forwards = {
            name: Forward(name, lambda e=endpoint: connect(e)) for name, endpoint in self.endpoints.items()
        }

    def urls(self) -> dict[str, str]:
        return {name: e.url(LOCALHOST, self.forwards[name].port) for name, e in self.endpoints.items()}

    def close(self) -> None:
        for forward in self.forwards.values():
            forward.close()

    def __enter__(self) -> Tunnels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rewrite(stack: Stack, urls: Mapping[str, str]) -> Stack:
    """The stack with these outputs' addresses replaced (the Stack fields and `outputs` alike)."""
    fields = {f.name for f in dataclasses.fields(Stack)}
    return dataclasses.replace(
        stack, **{k: v for k, v in urls.items() if k in fields}, outputs={**stack.outputs, **urls}
    )


# --------------------------------------------------------------------------------------------- Kubernetes
def choose_pod(service: Any, pods: list[Any], port: int) -> tuple[str, int]:
    """(pod name, pod port) to forward a Service's `port` (0: its first) to: a ready pod, the target port."""
    name = f"{service.metadata.namespace}/{service.metadata.name}"
    ports = service.spec.ports or []
    chosen = next((p for p in ports if port in (0, p.port)), None)
    if chosen is None:
        raise StackError(f"service {name} has no port {port} (it has {[p.port for p in ports]})")
    ready = sorted(
        (p for p in pods if _ready(p)),
        key=lambda p: p.metadata.name,
    )
    if not ready:
        selector = ",".join(f"{k}={v}" for k, v in (service.spec.selector or {}).items())
        raise StackError(
            f"no ready pod behind service {name} "
            f"(`kubectl -n {service.metadata.namespace} get pods -l {selector}` shows why)"
        )
    pod = ready[0]
    target = chosen.target_port if chosen.target_port is not None else chosen.port
    if isinstance(target, str) and not target.isdigit():
        for container in pod.spec.containers:
            for cport in container.ports or []:
                if cport.name == target:
                    return pod.metadata.name, int(cport.container_port)
        raise StackError(f"pod {pod.metadata.name} names no port {target!r} (service {name})")
    return pod.metadata.name, int(target)


def _ready(pod: Any) -> bool:
    status = pod.status
    if pod.metadata.deletion_timestamp is not None or status is None or status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])


def kube_connector(context: str, config_file: str | None = None) -> Callable[[Endpoint], socket.socket]:
    """connect(endpoint) -> a socket to the endpoint's pod port, through the Kubernetes API (port-forward)."""
    k8s = require_kubernetes()
    from kubernetes.stream import portforward

    client = k8s.config.new_client_from_config(config_file=config_file or _kubeconfig(), context=context)
    api = k8s.client.CoreV1Api(client)

    def service_of(endpoint: Endpoint) -> Any:
        if endpoint.service:
            return api.read_namespaced_service(endpoint.service, endpoint.namespace)
        found = api.list_namespaced_service(endpoint.namespace, label_selector=SERVING_LABEL).items
        found = [s for s in found if s.metadata.name.endswith("-summarizer")] or found
        if len(found) != 1:
            raise StackError(
                f"{len(found)} steep Services in namespace {endpoint.namespace}: "
                + ("`steep serve` deploys the summarizer there" if not found else "expected one")
            )
        return found[0]

    def connect(endpoint: Endpoint) -> socket.socket:
        service = service_of(endpoint)
        selector = ",".join(f"{k}={v}" for k, v in (service.spec.selector or {}).items())
        pods = api.list_namespaced_pod(endpoint.namespace, label_selector=selector).items
        pod, port = choose_pod(service, pods, endpoint.port)
        forward = portforward(
            api.connect_get_namespaced_pod_portforward, pod, endpoint.namespace, ports=str(port)
        )
        return forward.socket(port)

    return connect


# --------------------------------------------------------------------------------------------- the door
_opened: dict[tuple[str, str], tuple[Tunnels, Stack]] = {}
_opening = threading.Lock()


def inside_cluster() -> bool:
    """In a pod, the in-cluster addresses are the right ones (Kubernetes sets this in every container)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def reachable(
    stack: Stack | None,
    *,
    kube_context: str | None = None,
    region: str | None = None,
    connector: Callable[[Endpoint], socket.socket] | None = None,
) -> Stack | None:
    """The stack with addresses this machine can open: as recorded where those already are (the local
    target, or inside the cluster), else through port-forwards opened now and kept for this process.

    `connector` replaces the Kubernetes API (tests); `kube_context` is steep.yaml's stack.kube_context.
    """
    if stack is None or inside_cluster():
        return stack
    section = stack.reach or plan(stack.outputs)
    if section.get("mode") != "port-forward":
        return stack
    key = (stack.target, stack.created_at)
    with _opening:
        if key in _opened:
            return _opened[key][1]
        if connector is None:
            require_kubernetes()
            context = resolve_context(section, stack.target, kube_context, region)
            connector = kube_connector(context)
        tunnels = Tunnels(endpoints_of(section), connector)
        atexit.register(tunnels.close)
        reached = rewrite(stack, tunnels.urls())
        _opened[key] = (tunnels, reached)
        return reached


def opened(stack: Stack | None) -> Stack | None:
    """The reachable form of `stack` if this process opened its forwards already (opens nothing)."""
    if stack is None:
        return None
    entry = _opened.get((stack.target, stack.created_at))
    return entry[1] if entry else None


def close_all() -> None:
    """Close every forward this process opened (the next `reachable` opens new ones)."""
    with _opening:
        for tunnels, _ in _opened.values():
            tunnels.close()
        _opened.clear()


@contextlib.contextmanager
def reaching(stack: Stack | None, **kwargs: Any) -> Iterator[Stack | None]:
    """`reachable` for a block: the forwards close when it ends."""
    try:
        yield reachable(stack, **kwargs)
    finally:
        if stack is not None:
            entry = _opened.pop((stack.target, stack.created_at), None)
            if entry:
                entry[0].close()


def context_for_record(outputs: Mapping[str, Any], kubeconfig: str | Path | None = None) -> str | None:
    """The kubeconfig context of a freshly provisioned cloud stack, when this machine has exactly one
    (recorded, so later commands and the watchdog need not look); None when it has none or no client."""
    section = plan(outputs)
    cluster = section.get("cluster")
    if section.get("mode") != "port-forward" or not cluster:
        return None
    try:
        return find_context(kube_contexts(str(kubeconfig) if kubeconfig else None), cluster)
    except StackError:
        return None
