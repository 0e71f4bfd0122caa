"""`steep package`: a bento of the served model version, and Kubernetes manifests for a cloud stack.

The bento pins the model version it was built for (its tag is `v<version>`), so an image always serves the
model it is named after. Locking is off: BentoML's lock resolves against the public index and would put a
CUDA torch into a CPU image; the requirements are the versions installed here instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from steep import quiet
from steep.config import SteepConfig
from steep.inference_log import SALT_ENV, STORE_ENV, inference_salt, salt_file
from steep.serving import ServingError
from steep.serving.handoff import CONFIG_ARG, CONFIG_ENV, config_env
from steep.serving.process import SERVICE, bentoml_argv, environment

# what the service imports at run time (steep.inference_log pulls in great-expectations for its PII patterns)
RUNTIME_PACKAGES = (
    "torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "mlflow", "bentoml",
    "fastapi", "pydantic", "pyyaml", "pandas", "httpx", "psutil", "great-expectations",
    "onnxruntime", "onnxruntime-genai", "onnx", "onnx-ir",  # the onnxruntime engine and its exporter
)  # fmt: skip
STORE_PACKAGES = {"aws": "s3fs", "gcp": "gcsfs", "azure": "adlfs"}  # fsspec filesystem of each cloud's bucket
SOURCE_PACKAGES = ("steep",)  # what the service imports, copied into the bento
INCLUDE = ["steep/**/*.py", "steep/bentos/**/*.html"]
EXCLUDE = ["**/__pycache__/"]
# telemetry off in the bento, as steep.quiet sets it: read before the service (which quiets the rest) loads
BENTO_ENVS = ("BENTOML_DO_NOT_TRACK", "MLFLOW_DISABLE_TELEMETRY")
APP_LABEL = "app.kubernetes.io/name"
STATE_DIR = "/var/lib/steep"  # project.home inside a pod: the inference log and MLflow's download cache


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    run_id: str


def bento_name(cfg: SteepConfig) -> str:
    return f"{cfg.project.name}-summarizer"


def bento_version(model_version: str) -> str:
    return f"v{model_version}"


def pinned_config(cfg: SteepConfig, model_version: str) -> SteepConfig:
    """The config baked into the image: this model version, state under the container's working dir."""
    data = cfg.model_dump(mode="json")
    data["serving"]["model_alias"] = str(model_version)
    data["serving"]["host"] = "0.0.0.0"  # inside a container, the pod network is the only way in
    data["project"]["home"] = ".steep"
    return SteepConfig.model_validate(data)


def requirements(packages: tuple[str, ...] = RUNTIME_PACKAGES) -> list[str]:
    """The runtime packages at the versions installed here, without local tags like `+cpu`.

    A local tag only resolves on the index that built it: pass that index with --extra-index-url.
    """
    out = []
    for package in packages:
        try:
            out.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            out.append(package)
    return out


def bentofile(cfg: SteepConfig, model: ModelRef, extra_index_urls: list[str] | None = None) -> dict[str, Any]:
    """bentofile.yaml for the model version: service, sources, pinned requirements, the baked config."""
    store = STORE_PACKAGES.get(cfg.stack.target)  # a cloud's pods ship the inference log to its bucket
    packages = RUNTIME_PACKAGES + (("fsspec", store) if store else ())
    python: dict[str, Any] = {"packages": requirements(packages), "lock_packages": False}
    if extra_index_urls:
        python["extra_index_url"] = list(extra_index_urls)
    return {
        "service": SERVICE,
        "name": bento_name(cfg),
        "description": f"steep summarizer serving {model.name} v{model.version} (run {model.run_id})",
        "labels": {
            "steep.project": cfg.project.name,
            "steep.model_name": model.name,
            "steep.model_version": str(model.version),
            "steep.run_id": model.run_id,
        },
        "include": INCLUDE,
        "exclude": EXCLUDE,
        "python": python,
        "docker": {"python_version": f"{sys.version_info.major}.{sys.version_info.minor}"},
        # a bento argument, not an env var: BentoML applies arguments wherever the bento is served
        "args": {CONFIG_ARG: config_env(pinned_config(cfg, model.version))},
        "envs": [{"name": name, "value": quiet.ENV[name]} for name in BENTO_ENVS],
    }


def build_context(dest: Path) -> Path:
    """A clean bento build context: steep's installed packages, copied from wherever Python imports them.

    Nothing of the user's folder or of a source checkout (its pyproject.toml, tests, state) gets in.
    """
    if dest.exists():
        shutil.rmtree(dest)
    for package in SOURCE_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ServingError(f"cannot find the installed package {package!r}; reinstall steep")
        src = Path(next(iter(spec.submodule_search_locations)))
        shutil.copytree(src, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def build_bento(
    cfg: SteepConfig,
    model: ModelRef,
    out_dir: Path,
    extra_index_urls: list[str] | None = None,
    echo: Any = print,
) -> tuple[str, Path]:
    """Run `bentoml build` for the model version; -> (bento tag, bento folder in the bento store)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = bentofile(cfg, model, extra_index_urls)
    file = out_dir / "bentofile.yaml"
    file.write_text(yaml.safe_dump(spec, sort_keys=False))
    context = build_context(out_dir / "context")
    env = {**environment(cfg), CONFIG_ENV: spec["args"][CONFIG_ARG]}  # the build imports the service
    cmd = [
        *bentoml_argv(),
        "build",
        "-f",
        str(file),
        "--version",
        bento_version(model.version),
        "--output",
        "tag",
        str(context),
    ]
    echo(f"bentoml build {spec['name']}:{bento_version(model.version)} (package locking off)")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(context))
    if proc.returncode != 0:
        raise ServingError(
            f"bentoml build failed (exit {proc.returncode}):\n{(proc.stderr or proc.stdout)[-3000:]}\n"
            f"The bentofile it used is {file}."
        )
    tag = f"{spec['name']}:{bento_version(model.version)}"
    store = Path(env["BENTOML_HOME"]) / "bentos" / spec["name"] / bento_version(model.version)
    if not store.is_dir():
        raise ServingError(
            f"bentoml build reported success but {store} does not exist; output:\n{proc.stdout}"
        )
    return tag, store


def container_context(bento_dir: Path, dest: Path) -> Path:
    """The container build context: the bento folder, whose env/docker/Dockerfile builds the image.

    Run `docker build -f env/docker/Dockerfile .` in it, or `bentoml containerize TAG` where Docker runs.
    """
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(bento_dir, dest)
    dockerfile = dest / "env" / "docker" / "Dockerfile"
    if not dockerfile.is_file():
        raise ServingError(
            f"the bento at {bento_dir} has no env/docker/Dockerfile; rebuild it with `steep package`"
        )
    return dest


# --------------------------------------------------------------------------------------------- kubernetes
def api_key_secret(cfg: SteepConfig) -> str:
    """The Kubernetes Secret that holds the API key (key `api-key`)."""
    return f"{bento_name(cfg)}-api-key"


def salt_secret(cfg: SteepConfig) -> str:
    """The Kubernetes Secret that holds the inference-log salt (key `salt`)."""
    return f"{bento_name(cfg)}-inference-salt"


def secret_commands(cfg: SteepConfig, namespace: str, environ: dict[str, str] | None = None) -> list[str]:
    """The kubectl commands that create the Secrets the Deployment reads, values never printed.

    The salt is this stack's (made now when it has none), so the drift check hashes like the pods do.
    """
    environ = os.environ if environ is None else environ
    create = f"kubectl -n {namespace} create secret generic"
    commands = []
    if cfg.serving.api_key_env:
        commands.append(
            f"create the key secret first: {create} {api_key_secret(cfg)} --from-literal=api-key=..."
        )
    if environ.get(SALT_ENV, "").strip():
        source = f'--from-literal=salt="${SALT_ENV}"'
    else:
        inference_salt(cfg, environ)
        source = f"--from-file=salt={salt_file(cfg.home).resolve()}"
    commands.append(
        "create the inference-log salt secret first (the drift check hashes words with the same salt): "
        f"{create} {salt_secret(cfg)} {source}"
    )
    return commands


def _from_secret(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def render_manifests(
    cfg: SteepConfig,
    model: ModelRef,
    image: str,
    namespace: str,
    tracking_uri: str | None = None,
    cpu: str = "1",
    memory: str = "2Gi",
    inference_store: str | None = None,
) -> list[dict[str, Any]]:
    """Deployment + Service + HorizontalPodAutoscaler for the bento image, sized from `serving`.

    Rolling updates never take a ready pod away before its replacement is ready (maxUnavailable 0), and
    the readiness probe is /readyz, which answers only once the model is loaded: no request meets a cold pod.
    The API key and the inference-log salt come from Secrets (`secret_commands` says how to create them).
    With `inference_store` (the stack's object storage) the pods ship their inference log there in batches.
    """
    serving = cfg.serving
    app = bento_name(cfg)
    labels = {
        APP_LABEL: app,
        "app.kubernetes.io/part-of": "steep",
        "steep.dev/stack": cfg.project.name,  # the stack's name (stack_name), as on the platform's objects
        "app.kubernetes.io/version": bento_version(model.version),
        "steep/model-version": str(model.version),
    }
    selector = {APP_LABEL: app}
    env: list[dict[str, Any]] = [{"name": "STEEP__PROJECT__HOME", "value": STATE_DIR}]
    if tracking_uri:
        env.append({"name": "MLFLOW_TRACKING_URI", "value": tracking_uri})
    if inference_store:
        env.append({"name": STORE_ENV, "value": inference_store})
    if serving.api_key_env:
        env.append(_from_secret(serving.api_key_env, api_key_secret(cfg), "api-key"))
    # one salt for every pod and the drift check, so their word hashes agree (steep.inference_log)
    env.append(_from_secret(SALT_ENV, salt_secret(cfg), "salt"))

    def probe(path: str, **timing: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}, **timing}

    container = {
        "name": "summarizer",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": serving.port, "protocol": "TCP"}],
        "env": env,
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}},
        "startupProbe": probe("/healthz", periodSeconds=5, failureThreshold=60),
        "readinessProbe": probe("/readyz", periodSeconds=5, failureThreshold=3),
        "livenessProbe": probe("/healthz", periodSeconds=15, failureThreshold=4),
        "volumeMounts": [{"name": "state", "mountPath": STATE_DIR}],
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": max(serving.min_replicas, 1),
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(serving.port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "terminationGracePeriodSeconds": 60,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    # the inference log is written here first, then shipped to inference_store in batches
                    "volumes": [{"name": "state", "emptyDir": {}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app, "namespace": namespace, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": app, "namespace": namespace, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app},
            # an HPA cannot scale to zero without an alpha feature gate: min_replicas 0 keeps one pod
            "minReplicas": max(serving.min_replicas, 1),
            "maxReplicas": serving.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": serving.target_cpu_utilization,
                        },
                    },
                }
            ],
        },
    }
    return [deployment, service, hpa]


def write_manifests(docs: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path
