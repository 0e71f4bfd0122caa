"""`steep serve` and `steep package`: the champion behind an HTTP API, here or as an image + manifests."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from steep.cli.app import ConfigOpt, SetOpt, app, console, load
from steep.endpoints import Runtime
from steep.inference_log import inference_store
from steep.serving import ServingError, process
from steep.serving import package as pkg
from steep.serving.auth import api_key
from steep.serving.model_slot import resolve_version
from steep.serving.package import ModelRef
from steep.stack import daemons
from steep.stack.record import home_of

CLOUD_TARGETS = ("aws", "gcp", "azure")


def _model(runtime: Runtime, selector: str | None) -> ModelRef:
    """The model version a selector (alias or number, default serving.model_alias) names now."""
    registry = runtime.registry()
    number = resolve_version(registry, selector or runtime.cfg.serving.model_alias)
    mv = registry.version(number)
    return ModelRef(registry.name, str(mv.version), mv.run_id or "")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


@app.command("serve")
def serve(
    port: Annotated[int | None, typer.Option(help="port (default: serving.port)", show_default=False)] = None,
    model: Annotated[
        str | None,
        typer.Option(help="alias or version to serve (default: serving.model_alias)", show_default=False),
    ] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Serve the champion over HTTP on 127.0.0.1: POST /summarize, OpenAI-compatible /v1 routes, a web page
    at /, /docs, /metrics."""
    cfg = load(config, sets)
    if model:
        cfg.serving.model_alias = model
    api_key(cfg.serving)  # a missing key variable stops here, not inside the server
    ref = _model(Runtime.of(cfg), None)
    port = port or cfg.serving.port
    url = f"http://{cfg.serving.host}:{port}"
    console.print(f"serving {ref.name} v{ref.version} ({cfg.serving.model_alias}) at [bold]{url}[/]")
    console.print(f"  web page {url}/   API docs {url}/docs   metrics {url}/metrics   (Ctrl-C stops)")
    console.print(
        f"  POST {url}/summarize   OpenAI-compatible: base_url {url}/v1, model {ref.name}",
        markup=False,
    )
    # recorded and marked as this project's `serving`: `steep destroy` (and the TTL/idle teardown) stop it
    svc = daemons.Service(daemons.SERVING, home_of(cfg), cfg.serving.host, port)
    proc = process.start(cfg, cfg.serving.host, port, extra_env=daemons.marker_env(svc))
    daemons.record(svc, os.getpid(), {"http": port})
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM stops the server like Ctrl-C does
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        process.stop(proc)
        code = 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if (mine := daemons.read_pid(svc)) is not None and mine.pid == os.getpid():
            svc.pid_file.unlink(missing_ok=True)
    if code not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise ServingError(f"the server exited with code {code}; its log is above")


@app.command("package")
def package(
    version: Annotated[
        str | None, typer.Option(help="model version (default: what serving.model_alias names)")
    ] = None,
    k8s: Annotated[
        bool | None,
        typer.Option(
            "--k8s/--no-k8s",
            help="also write the container build context and Kubernetes manifests "
            "(default: on for a cloud stack target)",
            show_default=False,
        ),
    ] = None,
    manifests_only: Annotated[
        bool, typer.Option(help="write the Kubernetes manifests only (the image was built before)")
    ] = False,
    image_repo: Annotated[
        str | None, typer.Option(help="container registry/repository prefix for the image name")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option(help="Kubernetes namespace (default: the stack's serving namespace)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="output folder (default: <project.home>/package/v<version>)")
    ] = None,
    cpu: Annotated[
        str, typer.Option(help="CPU request per pod (the HPA's utilization is relative to it)")
    ] = "1",
    memory: Annotated[str, typer.Option(help="memory request and limit per pod")] = "2Gi",
    extra_index_url: Annotated[
        list[str] | None,
        typer.Option(help="extra package index for the image's pip install, e.g. a CPU-only torch index"),
    ] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Build a bento of the served model version (tag v<version>); for a cloud stack also manifests."""
    cfg = load(config, sets)
    runtime = Runtime.of(cfg)
    ref = _model(runtime, version)
    out = out or cfg.home / "package" / pkg.bento_version(ref.version)
    stack = runtime.record  # what pods are given: the in-cluster addresses
    target = stack.target if stack else cfg.stack.target
    want_k8s = k8s if k8s is not None else (target in CLOUD_TARGETS or manifests_only)
    console.print(f"packaging {ref.name} v{ref.version} (run {ref.run_id[:12]})")
    if not manifests_only:
        tag, bento_dir = pkg.build_bento(cfg, ref, out, extra_index_url, echo=console.print)
        console.print(f"[green]bento[/] {tag}  ({bento_dir})")
        if want_k8s:
            context = pkg.container_context(bento_dir, out / "context")
            console.print(f"container build context: {context}  (docker build -f env/docker/Dockerfile .)")
    if want_k8s:
        image = f"{pkg.bento_name(cfg)}:{pkg.bento_version(ref.version)}"
        image = f"{image_repo.rstrip('/')}/{image}" if image_repo else image  # the roots create no registry
        ns = namespace or (stack.output("namespace") if stack else None) or f"{cfg.project.name}-serving"
        tracking_uri = stack.mlflow_tracking_uri if stack else runtime.tracking_uri
        store = inference_store(cfg, stack)
        docs = pkg.render_manifests(cfg, ref, image, ns, tracking_uri, cpu=cpu, memory=memory,
                                    inference_store=store)  # fmt: skip
        path = pkg.write_manifests(docs, out / "k8s" / "summarizer.yaml")
        console.print(
            f"[green]manifests[/] {path}: Deployment, Service, HorizontalPodAutoscaler ({ns}, {image})"
        )
        for command in pkg.secret_commands(cfg, ns):
            console.print(command, markup=False, soft_wrap=True)  # one line to copy
