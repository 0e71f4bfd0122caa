"""A stand-in Kubernetes API server for the port-forward test: no kube-apiserver can run here.

It answers the three calls `port_forward.kube_connector` makes (read a Service, list its pods, open a
pod's port-forward websocket) the way the API server does, and relays the forwarded port to a real TCP
server on this machine. The websocket speaks the port-forward channel protocol: per port a data channel
(even) and an error channel (odd), each opened by a frame of the channel byte and the port (little-endian).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import WSMsgType, web

PROTOCOLS = ("v4.channel.k8s.io", "portforward.k8s.io")


class FakeKubeApi:
    def __init__(self, pod_port_target: int) -> None:
        self.pod_port_target = pod_port_target  # where a forwarded pod port really goes (127.0.0.1)
        self.forwarded: list[tuple[str, str, int]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None

    def kubeconfig(self, context: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "user", "user": {"token": "test-token"}}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "user"}}],
            "current-context": context,
        }

    # ------------------------------------------------------------------------------------ routes
    async def service(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        ports = [{"port": 5000, "targetPort": 5000, "protocol": "TCP"}]
        return web.json_response({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": name}, "ports": ports},
        })  # fmt: skip

    async def pods(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        app = request.query.get("labelSelector", "").removeprefix("app=")
        pod = {
            "metadata": {"name": f"{app}-0", "namespace": ns, "labels": {"app": app}},
            "spec": {"containers": [{"name": app, "ports": [{"containerPort": 5000}]}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }
        return web.json_response({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod]})

    async def portforward(self, request: web.Request) -> web.WebSocketResponse:
        ns, pod = request.match_info["ns"], request.match_info["pod"]
        port = int(request.query["ports"])
        self.forwarded.append((ns, pod, port))
        ws = web.WebSocketResponse(protocols=PROTOCOLS)
        await ws.prepare(request)
        reader, writer = await asyncio.open_connection("127.0.0.1", self.pod_port_target)
        header = port.to_bytes(2, "little")
        await ws.send_bytes(b"\x00" + header)  # data channel
        await ws.send_bytes(b"\x01" + header)  # error channel

        async def to_pod() -> None:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY and msg.data[:1] == b"\x00" and len(msg.data) > 1:
                    writer.write(msg.data[1:])
                    await writer.drain()
            writer.close()

        async def from_pod() -> None:
            while data := await reader.read(65536):
                await ws.send_bytes(b"\x00" + data)
            await ws.close()

        await asyncio.gather(to_pod(), from_pod())
        return ws

    # ------------------------------------------------------------------------------------ lifecycle
    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{ns}/services/{name}", self.service)
        app.router.add_get("/api/v1/namespaces/{ns}/pods", self.pods)
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{pod}/portforward", self.portforward)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> FakeKubeApi:
        threading.Thread(target=self._serve, daemon=True).start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
