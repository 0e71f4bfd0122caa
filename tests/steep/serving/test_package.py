"""`steep package` as plain functions: the bentofile and the Kubernetes manifests (no `bentoml build` here:
tests/bentos/test_package.py builds and serves one)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from steep.config import SteepConfig
from steep.inference_log import SALT_ENV, salt_file
from steep.serving.handoff import CONFIG_ARG, service_config
from steep.serving.package import (
    ModelRef,
    bentofile,
    pinned_config,
    render_manifests,
    secret_commands,
    write_manifests,
)

MODEL = ModelRef("steep-summarizer", "7", "abc123")


def test_bentofile_pins_the_model_version_and_turns_locking_off():
    cfg = SteepConfig()
    spec = bentofile(cfg, MODEL)
    assert spec["service"] == "steep.bentos.summarizer.service:SummarizerService"
    assert spec["python"]["lock_packages"] is False
    assert any(p.startswith("torch==") for p in spec["python"]["packages"])
    assert spec["labels"]["steep.model_version"] == "7" and spec["labels"]["steep.run_id"] == "abc123"
    baked = json.loads(spec["args"][CONFIG_ARG])
    assert service_config({}, arguments=spec["args"]).serving.model_alias == "7"
    moved = service_config({"STEEP__PROJECT__HOME": "/data"}, arguments=spec["args"])
    assert moved.project.home == "/data" and moved.serving.model_alias == "7"
    assert baked["serving"]["model_alias"] == "7" and baked["serving"]["host"] == "0.0.0.0"
    assert pinned_config(cfg, "7").project.home == ".steep"
    assert spec["envs"] == [
        {"name": "BENTOML_DO_NOT_TRACK", "value": "true"},
        {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
    ]


def manifests(tmp_path: Path, **serving) -> dict[str, dict]:
    cfg = SteepConfig.model_validate({"project": {"name": "acme"}, "serving": serving})
    docs = render_manifests(
        cfg, MODEL, "registry.invalid/acme-summarizer:v7", "acme-serving", "http://mlflow:5000"
    )
    path = write_manifests(docs, tmp_path / "k8s" / "summarizer.yaml")
    parsed = list(yaml.safe_load_all(path.read_text()))
    return {d["kind"]: d for d in parsed}


def test_manifests_deploy_the_image_with_probes_and_an_hpa_from_serving(tmp_path):
    docs = manifests(
        tmp_path, port=3100, min_replicas=2, max_replicas=9, target_cpu_utilization=55, api_key_env="ACME_KEY"
    )
    assert set(docs) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    dep, svc, hpa = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"]
    assert {d["metadata"]["namespace"] for d in docs.values()} == {"acme-serving"}
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    [container] = dep["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.invalid/acme-summarizer:v7"
    assert container["ports"][0]["containerPort"] == 3100
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"]  # an HPA on CPU utilization needs a CPU request
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"
    [mount] = container["volumeMounts"]
    assert env["STEEP__PROJECT__HOME"]["value"] == mount["mountPath"]
    assert dep["spec"]["template"]["spec"]["volumes"][0]["name"] == mount["name"]
    assert env["ACME_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "acme-summarizer-api-key"
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "acme-summarizer",
    }
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 9
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["averageUtilization"] == 55


def test_manifests_without_a_key_carry_only_the_salt_secret_and_keep_one_replica(tmp_path):
    docs = manifests(tmp_path, min_replicas=0, max_replicas=3)
    [container] = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert [e["name"] for e in container["env"] if "valueFrom" in e] == [SALT_ENV]
    assert docs["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 1


def test_every_pod_reads_the_inference_salt_from_one_secret(tmp_path):
    docs = manifests(tmp_path)
    [container] = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    secret = {"name": "acme-summarizer-inference-salt", "key": "salt"}
    assert env[SALT_ENV]["valueFrom"]["secretKeyRef"] == secret
    assert "value" not in env[SALT_ENV]


def test_secret_commands_create_the_secrets_the_deployment_reads_without_printing_them(tmp_path):
    cfg = SteepConfig.model_validate(
        {"project": {"name": "acme", "home": str(tmp_path / "home")}, "serving": {"api_key_env": "ACME_KEY"}}
    )
    key, salt = secret_commands(cfg, "acme-serving", environ={})
    assert "kubectl -n acme-serving create secret generic acme-summarizer-api-key" in key
    path = salt_file(cfg.home).resolve()
    assert salt.endswith(f"create secret generic acme-summarizer-inference-salt --from-file=salt={path}")
    assert path.is_file() and path.read_text() not in salt  # the stack's salt, made now, never printed
    keyless = SteepConfig.model_validate({"project": {"home": str(tmp_path / "home")}})
    [from_env] = secret_commands(keyless, "ns", environ={SALT_ENV: "s3cret"})
    assert from_env.endswith(f'--from-literal=salt="${SALT_ENV}"') and "s3cret" not in from_env
