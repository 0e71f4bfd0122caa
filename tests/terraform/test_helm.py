"""The cloud platform, rendered and checked offline: modules/platform's seven Helm releases, and the manifests
`steep package` writes, as the cluster would receive them.

Each release's values file goes through Terraform's templatefile() (tests/terraform/helm.py), then
`helm template` with the chart at the pinned version from ../shared/charts. Every object is validated
against the Kubernetes schema of the version each cloud root pins (strict: a field Kubernetes does not know
fails), RayClusters against the KubeRay CRD's schema (also strict: the API server would prune an unknown
field silently). Values keys a chart does not define fail too: Helm ignores them without a word.
"""

from __future__ import annotations

import base64
import fnmatch
import functools
import json
import os
import re
import subprocess
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import hcl2
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.terraform import helm
from tests.terraform.hcl import unquote

CLOUDS = ("aws", "gcp", "azure")
STEEP_LABELS = ("app.kubernetes.io/part-of", "steep.dev/stack")
SYSTEM_POOL = {"steep-pool": "system"}  # what helm.sample_variables passes as node_selector

# What each release renders (CRDs included, as helm install applies them): a chart or values change that
# adds or drops objects shows up here.
EXPECTED_KINDS = {
    "mlflow": {"ConfigMap": 2, "Deployment": 1, "Secret": 1, "Service": 1, "ServiceAccount": 1},
    "kuberay-operator": {"ClusterRole": 5, "ClusterRoleBinding": 1, "CustomResourceDefinition": 3,
                         "Deployment": 1, "Role": 1, "RoleBinding": 1, "Service": 1, "ServiceAccount": 1},
    "ray-cluster": {"RayCluster": 1},
    "prefect-server": {"Deployment": 1, "Job": 1, "Secret": 2, "Service": 3, "ServiceAccount": 1,
                       "StatefulSet": 1},
    "prefect-worker": {"Deployment": 1, "Role": 1, "RoleBinding": 1, "ServiceAccount": 1},
    "metrics-server": {"APIService": 1, "ClusterRole": 2, "ClusterRoleBinding": 2, "Deployment": 1,
                       "RoleBinding": 1, "Service": 1, "ServiceAccount": 1},
    # the plugin, and its MPS daemon (which only runs where a node is labelled nvidia.com/mps.capable)
    "nvidia-device-plugin": {"ClusterRole": 1, "ClusterRoleBinding": 1, "DaemonSet": 2, "ServiceAccount": 1},
}  # fmt: skip

# Objects whose chart gives no value that labels them: (chart, kind), "pod" for a workload's pod template.
UNLABELABLE = {
    ("mlflow", kind) for kind in ("ConfigMap", "Deployment", "Secret", "Service", "ServiceAccount", "pod")
} | {
    ("kuberay-operator", kind)
    for kind in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Role", "RoleBinding",
                 "Service", "ServiceAccount")
} | {("ray-cluster", "RayCluster")}  # fmt: skip

# Pod templates the chart cannot place on a node pool: the migration Job runs once per upgrade and ends
# (a finished pod keeps no node up).
UNPLACEABLE = {("prefect-server", "Job")}
# Pod templates that belong on the GPU pool (a DaemonSet there serves the GPU nodes), not the system pool.
ON_GPU_POOL = {("nvidia-device-plugin", "DaemonSet")}
GPU_POOL_SELECTOR = {"steep-pool": "gpu"}  # what helm.sample_variables passes as gpu_node_selector

# Values whose content the chart passes through untouched (user-chosen keys, or a Kubernetes object that the
# schema validation below checks field by field); below these paths any key is allowed.
FREE_FORM = {
    "mlflow": {"serviceAccount.annotations", "nodeSelector", "extraEnvVars"},
    "kuberay-operator": {"labels", "nodeSelector"},
    "ray-cluster": {
        f"{group}.{key}"
        for group in ("head", "worker", "additionalWorkerGroups.*")
        for key in ("labels", "nodeSelector", "rayStartParams", "resources", "autoscalerOptions", "lifecycle")
        if not (key == "autoscalerOptions" and group != "head")
    },
    "prefect-server": {"commonLabels", "server.nodeSelector", "server.podLabels", "migrations.podLabels",
                       "postgresql.commonLabels", "postgresql.primary.nodeSelector"},
    "prefect-worker": {"commonLabels", "worker.nodeSelector", "worker.podLabels"},
    "metrics-server": {"commonLabels", "podLabels", "nodeSelector"},
    "nvidia-device-plugin": {"nodeSelector", "selectorLabelsOverride"},
}  # fmt: skip
# Maps whose keys are names the user picks (ray-cluster: additionalWorkerGroups.<group name>.<field>), and the
# template variable that stands for one entry.
NAMED_ENTRIES = {"ray-cluster": ("additionalWorkerGroups", "$values")}


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module", autouse=True)
def helm_binary() -> str:
    """CI runs `bash scripts/bootstrap.sh --dev` first, which installs helm: a missing helm is a failure."""
    try:
        return helm.helm_binary()
    except helm.HelmMissing as exc:
        pytest.fail(str(exc))


def pinned_version(target: str) -> str:
    """The Kubernetes minor version terraform/<target> creates its cluster with."""
    with (helm.TF / target / "variables.tf").open() as f:
        variables = {unquote(k): v for block in hcl2.load(f)["variable"] for k, v in block.items()}
    assert "kubernetes_version" in variables, f"terraform/{target} must pin var.kubernetes_version"
    return unquote(variables["kubernetes_version"]["default"])


def rendered(target: str = "aws", charts: tuple[str, ...] = (), **variables: Any) -> dict[str, tuple]:
    """chart -> (release, values, objects) for `target`'s sample variables, at its pinned version."""
    return _rendered(target, charts, json.dumps(variables, sort_keys=True))


@functools.cache
def _rendered(target: str, charts: tuple[str, ...], variables: str) -> dict[str, tuple]:
    version = f"{pinned_version(target)}.0"
    return helm.render_platform(version, charts=charts, target=target, **json.loads(variables))


def objects(target: str = "aws") -> list[tuple[str, dict[str, Any]]]:
    return [(chart, obj) for chart, (_, _, objs) in rendered(target).items() for obj in objs]


def ray_cluster(target: str = "aws", **variables: Any) -> dict[str, Any]:
    """The RayCluster; with the sample variables from the full render the other tests share."""
    [cluster] = rendered(target, ("ray-cluster",) if variables else (), **variables)["ray-cluster"][2]
    return cluster


def pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod templates in a workload (Deployment/StatefulSet/Job) or a RayCluster (head + worker groups)."""
    spec = obj.get("spec") or {}
    if obj["kind"] == "RayCluster":
        return [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec.get("workerGroupSpecs", [])]
    return [spec["template"]] if "template" in spec else []


# ------------------------------------------------------------------------------------------ validation
def _without_nulls(node: Any) -> Any:
    """The API server reads a null field as absent (charts render `nodePort: null`); JSON Schema would not."""
    if isinstance(node, dict):
        return {k: _without_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_without_nulls(v) for v in node]
    return node


def _strict(schema: Any) -> Any:
    """A CRD's openAPIV3Schema as JSON Schema that refuses what the API server would prune: a field that is
    not in `properties` where the schema neither allows extra keys nor preserves unknown fields."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: _strict(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") or key in ("anyOf", "allOf", "oneOf"):
            out[key] = _strict(value)
        else:
            out[key] = value
    if (
        schema.get("type") == "object"
        and "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if schema.get("nullable") and isinstance(schema.get("type"), str):
        out["type"] = [schema["type"], "null"]
    return out


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    """(apiVersion, kind) -> a strict validator, for every version of every KubeRay CRD."""
    crds_dir = helm.CHARTS / "kuberay-operator-1.2.2" / "crds"
    found = {}
    for path in sorted(crds_dir.glob("*.yaml")):
        for crd in helm.chart_crd(path):
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = _strict(version["schema"]["openAPIV3Schema"])
                found[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return found


_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_NAME})?$")


def label_problems(labels: dict[str, Any] | None) -> list[str]:
    """What the API server would refuse in a label map (the JSON schema only says: strings)."""
    problems = []
    for key, value in (labels or {}).items():
        if not _LABEL_KEY.match(str(key)) or len(str(key).partition("/")[0]) > 253:
            problems.append(f"label key {key!r}")
        if not isinstance(value, str) or not _LABEL_VALUE.match(value):
            problems.append(f"label {key}={value!r}")
    return problems


def validation_errors(obj: dict[str, Any], version: str) -> list[str]:
    """Every reason the API server of Kubernetes `version` would refuse `obj` (strict schema + labels)."""
    obj = _without_nulls(obj)
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    errors = [f"{name}: {p}" for p in label_problems(obj["metadata"].get("labels"))]
    for template in pod_templates(obj):
        errors += [
            f"{name} pod template: {p}" for p in label_problems(template.get("metadata", {}).get("labels"))
        ]
    validator = crd_validators().get((obj["apiVersion"], obj["kind"])) or k8s_validator(
        version, obj["apiVersion"], obj["kind"]
    )
    if validator is None:
        return [*errors, f"{name}: Kubernetes {version} has no {obj['apiVersion']} {obj['kind']}"]
    errors += [
        f"{name}: {'.'.join(map(str, e.absolute_path))}: {e.message[:300]}"
        for e in validator.iter_errors(obj)
    ]
    return errors


@functools.cache
def k8s_validator(version: str, api_version: str, kind: str) -> jsonschema.Validator | None:
    """kubernetes_validate.validate(strict=True) for one kind, built once: that function reads its 1.5 MB
    definitions file on every call. Same schema files, same resolution (kubernetes-validate 1.37.0)."""
    from kubernetes_validate.utils import schema_contents
    from referencing import Resource

    folder = f"kubernetes-json-schema/v{version}-local-strict"
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = schema_contents(f"{folder}/{kind.lower()}-{group}.json", version)
    except FileNotFoundError:
        return None
    return jsonschema.Draft202012Validator(
        schema, registry=Resource.from_contents(schema) @ _definitions(version)
    )


@functools.cache
def _definitions(version: str) -> Any:
    from kubernetes_validate.utils import all_versions, schema_contents
    from referencing import Registry, Resource

    assert version in all_versions(), f"kubernetes-validate {kubernetes_validate.__version__} lacks {version}"
    contents = schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)
    return Resource.from_contents(contents) @ Registry()


# ------------------------------------------------------------------------------------------ chart keys
def _paths(node: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    out = set()
    if isinstance(node, dict):
        for key, value in node.items():
            out.add((*prefix, str(key)))
            out |= _paths(value, (*prefix, str(key)))
    return out


def _schema_paths(schema: dict[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    out = set()
    for key, sub in (schema.get("properties") or {}).items():
        out.add((*prefix, key))
        out |= _schema_paths(sub, (*prefix, key))
    return out


@functools.cache
def chart_keys(chart_dir: Path, chart: str) -> frozenset[str]:
    """Every values path the chart defines: its values.yaml tree, values.schema.json, and each `.Values.x.y`
    its templates read (charts read keys they only document in comments, e.g. head.enableInTreeAutoscaling);
    subcharts' keys under their name. Entries of a NAMED_ENTRIES map appear as `*`."""
    named, alias = NAMED_ENTRIES.get(chart, (None, None))
    paths = _paths(yaml.load((chart_dir / "values.yaml").read_text(), Loader=helm._UniqueKeyLoader))
    if (chart_dir / "values.schema.json").exists():
        paths |= _schema_paths(yaml.safe_load((chart_dir / "values.schema.json").read_text()))
    for template in (chart_dir / "templates").rglob("*"):
        if template.suffix not in (".yaml", ".tpl", ".txt"):
            continue
        text = template.read_text()
        for ref in re.findall(r"\.Values((?:\.[A-Za-z_]\w*)+)", text):
            paths.add(tuple(ref.strip(".").split(".")))
        if alias:
            for ref in re.findall(re.escape(alias) + r"((?:\.[A-Za-z_]\w*)+)", text):
                paths.add((named, "*", *ref.strip(".").split(".")))
    for sub in (chart_dir / "charts").glob("*/Chart.yaml"):
        name = yaml.safe_load(sub.read_text())["name"]
        paths |= {(name, *p.split(".")) for p in chart_keys(sub.parent, name)}
    keys = set()
    for path in paths:
        if named and len(path) > 1 and path[0] == named:
            path = (named, "*", *path[2:])
        keys |= {".".join(path[:i]) for i in range(1, len(path) + 1)}
    return frozenset(keys)


def undefined_keys(values: dict[str, Any], chart: str, defined: frozenset[str]) -> list[str]:
    named = NAMED_ENTRIES.get(chart, (None,))[0]
    free = FREE_FORM.get(chart, set())
    bad = []

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> None:
        for key, value in node.items():
            here = (*path, str(key))
            if named and len(here) == 2 and here[0] == named:
                here = (named, "*")
            dotted = ".".join(here)
            if here[0] == "global":
                continue  # shared with every subchart
            if dotted not in defined:
                bad.append(".".join((*path, str(key))))
            elif dotted not in free and isinstance(value, dict):
                walk(value, here)

    walk(values, ())
    return bad


# ------------------------------------------------------------------------------------------ the roots
def _root(target: str) -> dict[str, Any]:
    with (helm.TF / target / "main.tf").open() as f:
        return hcl2.load(f)


def _resources(target: str) -> dict[str, dict[str, Any]]:
    return {
        f"{unquote(rtype)}.{unquote(name)}": body
        for block in _root(target)["resource"]
        for rtype, named in block.items()
        for name, body in named.items()
    }


GPU_POOL = {"aws": "aws_eks_node_group.gpu", "gcp": "google_container_node_pool.gpu",
            "azure": "azurerm_kubernetes_cluster_node_pool.gpu"}  # fmt: skip
CLUSTER_VERSION = {"aws": ("aws_eks_cluster.this", "version"),
                   "gcp": ("google_container_cluster.this", "min_master_version"),
                   "azure": ("azurerm_kubernetes_cluster.this", "kubernetes_version")}  # fmt: skip
_EFFECTS = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}


def gpu_pool_taints(target: str) -> list[dict[str, str]]:
    """Every taint terraform/<target> may put on its GPU pool (both branches of a conditional included)."""
    return pool_taints(target, "gpu")


def pool_taints(target: str, pool: str) -> list[dict[str, str]]:
    """Every taint terraform/<target> may put on a worker pool (both branches of a conditional included)."""
    body = _resources(target)[POOLS[target][pool]]
    taints = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "taint":
                    for t in value:
                        effect = unquote(t["effect"])
                        taints.append({"key": unquote(t["key"]), "value": unquote(t.get("value", '""')),
                                       "effect": _EFFECTS.get(effect, effect)})  # fmt: skip
                elif key == "node_taints":
                    for k, v, effect in re.findall(r'"([\w./-]+)=([\w.-]*):(\w+)"', str(value)):
                        taints.append({"key": k, "value": v, "effect": effect})
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(body)
    return taints


def tolerates(tolerations: list[dict[str, str]], taint: dict[str, str]) -> bool:
    """Kubernetes' matching of a taint by a pod's tolerations."""
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint["effect"]:
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t["key"] == taint["key"]):
            return True
        if (
            t.get("key") == taint["key"]
            and t.get("operator", "Equal") == "Equal"
            and t.get("value", "") == taint["value"]
        ):
            return True
    return False


POOLS = {
    "aws": {p: f"aws_eks_node_group.{p}" for p in ("system", "cpu", "gpu")},
    "gcp": {p: f"google_container_node_pool.{p}" for p in ("system", "cpu", "gpu")},
    "azure": {"system": "azurerm_kubernetes_cluster.this", "cpu": "azurerm_kubernetes_cluster_node_pool.cpu",
              "gpu": "azurerm_kubernetes_cluster_node_pool.gpu"},
}  # fmt: skip


def pool_labels(target: str, pool: str) -> dict[str, str]:
    """The literal labels terraform/<target> puts on a pool's nodes (a merge(...) contributes its maps)."""
    body = _resources(target)[POOLS[target][pool]]
    if target == "azure" and pool == "system":
        [body] = body["default_node_pool"]
    value = body.get("labels") or body.get("node_labels") or body["node_config"][0]["labels"]
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items()}
    return dict(re.findall(r'\\?"([\w./-]+)\\?"\s*=\s*\\?"([\w./-]+)\\?"', str(value)))


def _matches(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = expr["key"], expr["operator"], expr.get("values", [])
    return {"In": lambda: labels.get(key) in values, "NotIn": lambda: labels.get(key) not in values,
            "Exists": lambda: key in labels, "DoesNotExist": lambda: key not in labels}[op]()  # fmt: skip


def schedules_on(pod: dict[str, Any], labels: dict[str, str], taints: list[dict[str, str]]) -> bool:
    """Whether the scheduler may place `pod` (a pod spec) on a node with these labels and taints: its
    nodeSelector, its required node affinity and its tolerations (Kubernetes' rules, resources aside)."""
    if not (pod.get("nodeSelector") or {}).items() <= labels.items():
        return False
    required = (((pod.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))  # fmt: skip
    if required and not any(
        all(_matches(e, labels) for e in term.get("matchExpressions", []))
        for term in required["nodeSelectorTerms"]
    ):
        return False
    return all(
        tolerates(pod.get("tolerations") or [], taint)
        for taint in taints
        if taint["effect"] in ("NoSchedule", "NoExecute")
    )


# ------------------------------------------------------------------------------------------ tests
def test_each_cloud_root_pins_one_kubernetes_version_that_the_schemas_cover() -> None:
    supported = kubernetes_validate.utils.all_versions()
    for target in CLOUDS:
        version = pinned_version(target)
        assert re.fullmatch(r"1\.\d+", version), f"terraform/{target}: kubernetes_version {version!r}"
        assert f"{version}.0" in supported, f"kubernetes-validate has no schema for {version}: upgrade it"
        address, attribute = CLUSTER_VERSION[target]
        assert _resources(target)[address].get(attribute) == "${var.kubernetes_version}", (
            f"terraform/{target}: {address}.{attribute} must be var.kubernetes_version"
        )


def test_values_files_take_exactly_the_variables_main_tf_passes() -> None:
    """The test renders with the names main.tf gives templatefile(), and every one of them is used."""
    passed = set(helm.module_locals()["values_vars"])
    sample = set(helm.sample_variables()) - {"artifact_uri"} | {"artifact"}
    assert sample == passed, f"tests/terraform/helm.py sample_variables is out of date: {sample ^ passed}"
    texts = "".join(r.values_file.read_text() for r in helm.releases("demo"))
    unused = [name for name in passed if not re.search(rf"\b{name}\b", texts)]
    assert not unused, f"local.values_vars entries no values file reads: {unused}"
    assert len(helm.releases("demo")) == 7


@pytest.mark.parametrize("target", CLOUDS)
def test_every_rendered_object_is_valid_for_the_pinned_kubernetes(target: str) -> None:
    version = f"{pinned_version(target)}.0"
    errors = [f"{chart}: {e}" for chart, obj in objects(target) for e in validation_errors(obj, version)]
    assert not errors, f"invalid for Kubernetes {version}:\n" + "\n".join(errors)


def test_every_release_renders_the_objects_it_should() -> None:
    kinds = {chart: dict(Counter(o["kind"] for o in objs)) for chart, (_, _, objs) in rendered().items()}
    assert kinds == EXPECTED_KINDS


@pytest.mark.parametrize("target", CLOUDS)
def test_values_use_only_keys_the_chart_defines(target: str) -> None:
    for chart, (release, values, _) in rendered(target).items():
        defined = chart_keys(release.chart_dir, chart)
        stale = {p for p in FREE_FORM.get(chart, set()) if p not in defined}
        assert not stale, f"{chart}: FREE_FORM paths the chart does not define: {stale}"
        bad = undefined_keys(values, chart, defined)
        assert not bad, (
            f"{release.values_file.name}: keys {release.chart} {release.version} does not define: {bad}"
        )


def test_the_key_check_catches_what_the_chart_ignores() -> None:
    """The check itself: the value that shipped before (commonLabels on ray-cluster) fails it."""
    rel = rendered()["ray-cluster"][0]
    defined = chart_keys(rel.chart_dir, "ray-cluster")
    assert undefined_keys({"commonLabels": {"a": "b"}}, "ray-cluster", defined) == ["commonLabels"]
    assert undefined_keys({"head": {"enableInTreeAutoscalng": True}}, "ray-cluster", defined)
    assert not undefined_keys(
        {"additionalWorkerGroups": {"x": {"labels": {"a": "b"}}}}, "ray-cluster", defined
    )
    assert undefined_keys({"additionalWorkerGroups": {"x": {"lables": {}}}}, "ray-cluster", defined)
    bad = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "x"},
           "spec": {"headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": []}}},
                    "autoscalerOptions": {"idleTimeout": 60}}}  # fmt: skip
    assert any("idleTimeout" in e for e in validation_errors(bad, "1.35.0"))


def test_ray_cluster_autoscales_both_worker_groups_from_zero() -> None:
    defaults = helm.variable_defaults()
    assert defaults["cpu_workers"]["min"] == 0 and defaults["ray_idle_timeout_s"] == 300
    spec = ray_cluster()["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] == 300
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    for group in groups.values():
        assert group["minReplicas"] == 0 and group["replicas"] == 0 and group["maxReplicas"] > 0
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # work goes to the scaled groups
    assert ray_cluster(ray_idle_timeout_s=120)["spec"]["autoscalerOptions"]["idleTimeoutSeconds"] == 120
    without_gpu = ray_cluster(gpu_workers={"min": 0, "max": 0, "gpus": 1, "cpu": "3", "memory": "12Gi"})
    assert [g["groupName"] for g in without_gpu["spec"]["workerGroupSpecs"]] == ["cpu"]


@pytest.mark.parametrize("target", CLOUDS)
def test_gpu_workers_request_gpus_and_tolerate_the_gpu_pool(target: str) -> None:
    taints = gpu_pool_taints(target)
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in taints), taints
    [gpu] = [g for g in ray_cluster(target)["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu"]
    pod = gpu["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["rayStartParams"]["num-gpus"] == "1"
    untolerated = [t for t in taints if not tolerates(pod["tolerations"], t)]
    assert not untolerated, f"Ray GPU workers would never schedule on the {target} GPU pool: {untolerated}"
    # the selector the root passes matches the label the root puts on its GPU pool
    call = next(
        body for b in _root(target)["module"] for name, body in b.items() if unquote(name) == "platform"
    )
    selector = {unquote(k): unquote(v) for k, v in call["gpu_node_selector"].items()}
    assert selector == {"steep-pool": "gpu"} == pod["nodeSelector"]
    assert re.search(r"steep-pool\W+gpu", str(_resources(target)[GPU_POOL[target]])), "GPU pool label"


def _device_plugin(target: str) -> dict[str, Any]:
    [plugin] = [o for o in rendered(target)["nvidia-device-plugin"][2]
                if o["kind"] == "DaemonSet" and o["metadata"]["name"] == "nvidia-device-plugin"]  # fmt: skip
    return plugin


@pytest.mark.parametrize("target", CLOUDS)
def test_gpu_nodes_get_a_device_plugin_where_the_cloud_brings_none(target: str) -> None:
    """A GPU node offers nvidia.com/gpu (what the Ray GPU workers request) only through a device plugin. GKE
    installs the driver and runs its own; EKS's AL2023 NVIDIA AMI and AKS's GPU pools bring the driver only,
    so modules/platform installs NVIDIA's plugin there: on every GPU node, and nowhere else."""
    call = next(
        body for b in _root(target)["module"] for name, body in b.items() if unquote(name) == "platform"
    )
    gpu_pool = _resources(target)[GPU_POOL[target]]
    release = next(
        body
        for block in helm._hcl(helm.PLATFORM / "main.tf")["resource"]
        for rtype, named in block.items()
        if unquote(rtype) == "helm_release"
        for name, body in named.items()
        if unquote(name) == "nvidia_device_plugin"
    )
    assert release["count"] == "${var.nvidia_device_plugin ? 1 : 0}"
    assert unquote(release["namespace"]) == "kube-system"
    if target == "gcp":
        assert call["nvidia_device_plugin"] is False  # a second plugin would fight GKE's over the GPUs
        [accelerator] = gpu_pool["node_config"][0]["guest_accelerator"]
        assert unquote(accelerator["gpu_driver_installation_config"][0]["gpu_driver_version"]) == "DEFAULT"
        return
    assert call["nvidia_device_plugin"] is True, f"terraform/{target}: GPU nodes would advertise no GPU"
    if target == "aws":  # the GPU AMI: driver + container toolkit; AL2 has no AMIs for Kubernetes >= 1.33
        assert unquote(gpu_pool["ami_type"]) == "AL2023_x86_64_NVIDIA"
    if target == "azure":  # AKS installs the driver unless told not to
        assert "gpu_driver" not in gpu_pool
    pod = _device_plugin(target)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == helm.sample_variables(target)["gpu_node_selector"]
    selector = {unquote(k): unquote(v) for k, v in call["gpu_node_selector"].items()}
    assert selector == GPU_POOL_SELECTOR  # what the sample passes is what the root passes
    labels, taints = pool_labels(target, "gpu"), gpu_pool_taints(target)
    assert schedules_on(pod, labels, taints), f"the device plugin would not run on the {target} GPU pool"
    for other in ("system", "cpu"):
        assert not schedules_on(pod, pool_labels(target, other), []), f"the device plugin on the {other} pool"
    # the chart's own affinity (node-feature-discovery's labels, which no steep node has) would keep it off
    chart_dir = rendered(target)["nvidia-device-plugin"][0].chart_dir
    chart = yaml.safe_load((chart_dir / "values.yaml").read_text())
    assert not schedules_on({**pod, "affinity": chart["affinity"]}, labels, taints)
    [container] = pod["containers"]
    app = yaml.safe_load((chart_dir / "Chart.yaml").read_text())["appVersion"]
    assert container["image"] == f"nvcr.io/nvidia/k8s-device-plugin:v{app}"
    assert pod["priorityClassName"] == "system-node-critical"


def test_the_toleration_check_refuses_a_pod_that_does_not_tolerate() -> None:
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    assert tolerates([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}], taint)
    assert not tolerates([{"key": "nvidia.com/gpu", "operator": "Equal", "value": "true"}], taint)
    assert not tolerates([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}], taint)
    assert not tolerates([], taint)


# ------------------------------------------------------------------------------------------ spot reclaims
# What a spot reclaim notice leaves a pod before its node goes, and what turns the notice into the pod's
# deletion (which runs its preStop hook): EC2's interruption notice comes 2 minutes ahead, and EKS's managed
# node groups drain spot nodes on it (or earlier, on a rebalance recommendation); a GCE spot VM goes 30 s
# after its preemption notice, and GKE's graceful node shutdown gives non-system pods the first 15 s; Azure's
# Preempt scheduled event comes at least 30 s ahead, and AKS's node auto-drain drains the node on it.
RECLAIM_NOTICE_S = {"aws": 120, "gcp": 15, "azure": 30}
POD_GRACE_S = 30  # the API server's default terminationGracePeriodSeconds, where the pod spec has none
PREEMPTION = "DRAIN_NODE_REASON_PREEMPTION"
SAMPLE_NODE_ID = "5c1e7f0b9a2d4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b"  # 28 bytes, as Ray's NodeID
SAMPLE_GCS = "demo-ray-kuberay-head-svc.steep.svc.cluster.local:6379"  # KubeRay's RAY_ADDRESS on a worker
# A Ray worker pod's processes as /proc shows them: `ray start` (the container's command), its raylet (whose
# --node_id is the node's id), and the dashboard agent (a --node-id of another form)
FAKE_PROCS = {
    "1": ["/bin/bash", "-lc", "--", "ulimit -n 65536; ray start --address=$FQ_RAY_IP:$RAY_PORT --block"],
    "42": ["/home/ray/anaconda3/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet",
           "--raylet_socket_name=/tmp/ray/session_latest/sockets/raylet", f"--node_id={SAMPLE_NODE_ID}",
           "--node_ip_address=10.44.0.7", f"--gcs-address={SAMPLE_GCS}"],
    "77": ["/home/ray/anaconda3/bin/python", "-u", "ray/dashboard/agent.py", f"--node-id={'0' * 56}"],
}  # fmt: skip


def spot_pool(target: str, pool: str) -> bool:
    """Whether terraform/<target> may put a worker pool on spot capacity (either branch of a conditional)."""
    body = _resources(target)[POOLS[target][pool]]
    if target == "aws":
        return "SPOT" in str(body.get("capacity_type", ""))
    if target == "gcp":
        return body["node_config"][0].get("spot") not in (None, False)
    return "Spot" in str(body.get("priority", ""))


def drain_hooks(cluster: dict[str, Any]) -> dict[str, tuple[dict[str, Any], str]]:
    """Worker group -> (its pod spec, the shell script of its Ray container's preStop hook)."""
    hooks = {}
    for group in cluster["spec"]["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        [container] = [c for c in pod["containers"] if c["name"] == "ray-worker"]
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[:2] == ["/bin/sh", "-c"] and len(command) == 3, command
        hooks[group["groupName"]] = (pod, command[2])
    return hooks


def run_hook(
    script: str, tmp: Path, raylet: bool = True, drain: str | None = None, address: str | None = SAMPLE_GCS
) -> tuple[float, list[str] | None]:
    """The hook under sh, as the pod runs it, on a fake /proc (FAKE_PROCS; no raylet if not `raylet`) and with
    a `ray` that records its arguments, then runs `drain` (by default the drained raylet exits, as an idle
    node's does) -> (seconds the hook took, the arguments `ray` got, or None if the hook did not run it)."""
    assert script.count("/proc/") == 1, "the hook reads /proc in one place: the fake one replaces it"
    for pid, argv in FAKE_PROCS.items():
        if raylet or pid != "42":
            (tmp / "proc" / pid).mkdir(parents=True)
            (tmp / "proc" / pid / "cmdline").write_text("".join(f"{a}\0" for a in argv))
    (tmp / "bin").mkdir()
    ray = tmp / "bin" / "ray"
    drain = drain or f"rm -r '{tmp}/proc/42'"
    ray.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" > '{tmp}/args'\n{drain}\n")
    ray.chmod(0o755)
    env = {"PATH": f"{tmp / 'bin'}:{os.environ['PATH']}", **({"RAY_ADDRESS": address} if address else {})}
    start = time.monotonic()
    done = subprocess.run(["/bin/sh", "-c", script.replace("/proc/", f"{tmp}/proc/")], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    took = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    args = tmp / "args"
    return took, args.read_text().split("\0")[:-1] if args.exists() else None


def ray_drain_node() -> Any:
    """The click command behind `ray drain-node`, from the Ray steep pins (its CLI module imports Ray Serve,
    whose models warn of Pydantic deprecations: not this test's business)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ray.scripts.scripts import drain_node
    return drain_node


def hook_deadline(script: str) -> int:
    match = re.search(r"^deadline=(\d+)$", script, flags=re.M)
    assert match, f"the hook sets its deadline first:\n{script}"
    return int(match.group(1))


@pytest.mark.parametrize("target", CLOUDS)
def test_every_ray_worker_drains_its_own_node_for_preemption_before_its_pod_goes(
    target: str, tmp_path: Path
) -> None:
    """A reclaim notice reaches a Ray worker as its pod's deletion; the preStop hook turns it into Ray's drain
    of the pod's own node, reason PREEMPTION, with a deadline inside the pod's grace period, as `steep drill
    preempt` does on the local stack, so that Ray Train checkpoints at once."""
    drain_node = ray_drain_node()
    notice = RECLAIM_NOTICE_S[target]
    assert helm.root_input(target, "reclaim_notice_s") == notice, f"terraform/{target}: reclaim_notice_s"
    hooks = drain_hooks(ray_cluster(target))
    assert set(hooks) == {"cpu", "gpu"}
    for group, (pod, script) in hooks.items():
        grace = pod.get("terminationGracePeriodSeconds", POD_GRACE_S)
        deadline = hook_deadline(script)
        # Ray's shutdown on the SIGTERM after the hook gets the last seconds of what the pod has
        assert 0 < deadline <= min(notice, grace) - 3, f"{target} {group}: deadline {deadline} s"
        took, args = run_hook(script, tmp_path / group)
        assert args and args[0] == "drain-node", f"{target} {group}: no `ray drain-node`"
        params = drain_node.make_context("drain-node", args[1:]).params
        assert params["reason"] == PREEMPTION
        assert params["node_id"] == SAMPLE_NODE_ID  # the pod's own raylet's, not the agent's
        assert params["address"] == SAMPLE_GCS
        assert params["deadline_remaining_seconds"] == deadline < grace
        assert took < deadline, f"{target} {group}: the hook outlived its drained raylet ({took:.1f} s)"


def test_the_drain_hooks_arguments_are_what_rays_own_command_accepts(tmp_path: Path) -> None:
    """`ray drain-node` is a hidden command with no stability promise: the hook's arguments, its variables
    filled in by sh with sample values, go through the click command of the Ray steep pins."""
    import click

    drain_node = ray_drain_node()
    hooks = drain_hooks(ray_cluster())
    assert len({script for _, script in hooks.values()}) == 1  # one hook for both groups
    _, script = hooks["cpu"]
    _, args = run_hook(script, tmp_path, address=None)
    assert args is not None and args[0] == "drain-node"
    params = drain_node.make_context("drain-node", args[1:]).params  # click raises on what it refuses
    assert params["address"] == "auto"  # no RAY_ADDRESS: ray finds the node's cluster itself
    assert params["node_id"] == SAMPLE_NODE_ID and params["reason"] == PREEMPTION
    assert params["deadline_remaining_seconds"] == hook_deadline(script)
    assert re.fullmatch(r"steep: reclaim of pod \S+ in \d+ s", params["reason_message"])
    with pytest.raises(click.UsageError):  # and the check is not a rubber stamp
        drain_node.make_context("drain-node", [*args[1:], "--reason", "DRAIN_NODE_REASON_RECLAIM"])


def test_the_drain_hook_waits_until_the_deadline_whatever_the_drain_does(tmp_path: Path) -> None:
    """The hook keeps the pod up until the deadline it gave Ray, even if the drain fails or hangs, and never
    longer (the kubelet kills the pod at its grace period); without a raylet it has nothing to wait for."""
    cluster = ray_cluster("gcp", reclaim_notice_s=10)  # the shortest notice the module takes
    [script] = {s for _, s in drain_hooks(cluster).values()}
    deadline = hook_deadline(script)
    assert deadline == 5
    for name, drain in (("fails", "exit 1"), ("hangs", "exec sleep 60")):
        took, args = run_hook(script, tmp_path / name, drain=drain)
        assert args is not None, name
        assert deadline - 1.5 <= took <= deadline + 4, f"a drain that {name}: the hook took {took:.1f} s"
    took, args = run_hook(script, tmp_path / "no-raylet", raylet=False)
    assert args is None and took < 3


# Not AWS: ray-cluster 1.2.2 has no value for terminationGracePeriodSeconds (no KubeRay chart has), so a Ray
# worker pod gets Kubernetes' 30 s of the 120 s EC2's notice leaves; the drain's deadline fits those 30 s.
@pytest.mark.parametrize("target", ["gcp", "azure"])
def test_ray_workers_grace_period_covers_what_the_notice_leaves_them(target: str) -> None:
    for group, (pod, _) in drain_hooks(ray_cluster(target)).items():
        grace = pod.get("terminationGracePeriodSeconds", POD_GRACE_S)
        assert grace >= RECLAIM_NOTICE_S[target], f"{target} {group}: {grace} s of {RECLAIM_NOTICE_S[target]}"


@pytest.mark.parametrize("target", CLOUDS)
def test_ray_workers_tolerate_what_their_pools_spot_capacity_brings(target: str) -> None:
    """Only the GPU pools may be spot; of the spot marks the clouds put on nodes, only AKS's is a taint
    (kubernetes.azure.com/scalesetpriority=spot:NoSchedule); EKS's (eks.amazonaws.com/capacityType) and
    GKE's (cloud.google.com/gke-spot) are labels, which no worker selects on."""
    assert [p for p in ("cpu", "gpu") if spot_pool(target, p)] == ["gpu"], (
        f"terraform/{target}: a spot CPU pool needs its spot taint tolerated by the CPU workers"
    )
    spot_taints = [t for t in pool_taints(target, "gpu") if t["key"] != "nvidia.com/gpu"]
    assert spot_taints == {
        "aws": [], "gcp": [],
        "azure": [{"key": "kubernetes.azure.com/scalesetpriority", "value": "spot", "effect": "NoSchedule"}],
    }[target]  # fmt: skip
    for group in ray_cluster(target)["spec"]["workerGroupSpecs"]:
        pool = group["groupName"]
        assert schedules_on(
            group["template"]["spec"], pool_labels(target, pool), pool_taints(target, pool)
        ), f"the Ray {pool} workers would not schedule on the {target} {pool} pool"


def test_each_cloud_drains_its_spot_nodes_itself() -> None:
    """Nothing to install for the notice to reach the pods: EKS's managed node groups, GKE's graceful node
    shutdown and AKS's node auto-drain handle spot nodes by default. Self-managed EC2 nodes would need the
    aws-node-termination-handler (whose chart ../shared/charts does not hold)."""
    aws = _resources("aws")
    assert not [
        a for a in aws if a.startswith(("aws_autoscaling_group.", "aws_launch_template.", "aws_instance."))
    ]
    assert {a for a in aws if a.startswith("aws_eks_node_group.")} == {
        f"aws_eks_node_group.{p}" for p in ("system", "cpu", "gpu")
    }
    assert unquote(aws["aws_eks_node_group.gpu"]["capacity_type"]) == '${var.gpu_spot ? "SPOT" : "ON_DEMAND"}'
    assert _resources("gcp")["google_container_node_pool.gpu"]["node_config"][0]["spot"] == "${var.gpu_spot}"
    assert "Spot" in _resources("azure")["azurerm_kubernetes_cluster_node_pool.gpu"]["priority"]


@pytest.mark.parametrize("target", CLOUDS)
def test_steep_labels_every_object_a_chart_lets_it_label(target: str) -> None:
    missing, unexpected = [], []
    for chart, obj in objects(target):
        parts = [(obj["kind"], obj["metadata"].get("labels"))]
        parts += [("pod", t.get("metadata", {}).get("labels")) for t in pod_templates(obj)]
        for kind, labels in parts:
            has = all((labels or {}).get(k) for k in STEEP_LABELS)
            where = f"{chart} {obj['kind']}/{obj['metadata']['name']}" + (
                " pod template" if kind == "pod" else ""
            )
            if (chart, kind) in UNLABELABLE:
                if has:
                    unexpected.append(where)
            elif not has or labels.get("steep.dev/stack") != "demo":
                missing.append(where)
    assert not missing, f"objects without steep's labels: {missing}"
    assert not unexpected, f"labelled after all, remove from UNLABELABLE: {unexpected}"


def test_platform_pods_stay_on_the_system_pool_and_ray_workers_on_theirs() -> None:
    wrong = []
    for chart, obj in objects():
        if obj["kind"] == "RayCluster":
            continue
        for template in pod_templates(obj):
            selector = template["spec"].get("nodeSelector") or {}
            if (chart, obj["kind"]) in ON_GPU_POOL:
                placed = GPU_POOL_SELECTOR.items() <= selector.items()
            else:
                placed = (selector == SYSTEM_POOL) != ((chart, obj["kind"]) in UNPLACEABLE)
            if not placed:
                wrong.append(f"{chart} {obj['kind']}/{obj['metadata']['name']}")
    assert not wrong, f"pod templates placed wrong (or UNPLACEABLE is stale): {wrong}"
    spec = ray_cluster()["spec"]
    assert spec["headGroupSpec"]["template"]["spec"]["nodeSelector"] == SYSTEM_POOL
    pools = {g["groupName"]: g["template"]["spec"]["nodeSelector"] for g in spec["workerGroupSpecs"]}
    assert pools == {"cpu": {"steep-pool": "cpu"}, "gpu": {"steep-pool": "gpu"}}
    for template in pod_templates(ray_cluster()):
        assert template["spec"]["serviceAccountName"] == "mlflow"  # the one with the bucket's identity


def test_ray_address_in_outputs_names_the_rendered_cluster() -> None:
    outputs = (helm.PLATFORM / "outputs.tf").read_text()
    assert "${helm_release.ray_cluster.name}-kuberay-head-svc" in outputs
    release = rendered()["ray-cluster"][0]
    assert ray_cluster()["metadata"]["name"] == f"{release.name}-kuberay"  # KubeRay adds -head-svc


@pytest.mark.parametrize(
    ("target", "destination", "storage_key"),
    [("aws", "s3://demo-art/mlflow", "s3"), ("gcp", "gs://demo-art/mlflow", "gcs"),
     ("azure", "wasbs://artifacts@demoart.blob.core.windows.net/mlflow", "azureBlob")],
)  # fmt: skip
def test_mlflow_serves_artifacts_from_the_stack_bucket(
    target: str, destination: str, storage_key: str
) -> None:
    release, values, objs = rendered(target)["mlflow"]
    by_kind = {o["kind"]: o for o in objs}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert (
        f"--artifacts-destination={destination}" in container["args"]
        and "--serve-artifacts" in container["args"]
    )
    assert "--backend-store-uri=postgresql://" in container["args"]
    assert [k for k in ("s3", "gcs", "azureBlob") if values["artifactRoot"].get(k, {}).get("enabled")] == [
        storage_key
    ]
    assert container["image"] == helm.variable_defaults()["mlflow_image"]
    assert pod["serviceAccountName"] == "mlflow" == by_kind["ServiceAccount"]["metadata"]["name"]
    assert (
        by_kind["ServiceAccount"]["metadata"]["annotations"]
        == helm.sample_variables(target)["service_account_annotations"]
    )
    # the password comes from set_sensitive, never from the values file
    assert release.sensitive_sets == ["backendStore.postgres.password"]
    assert base64.b64decode(by_kind["Secret"]["data"]["PGPASSWORD"]).decode() == helm.SAMPLE_PASSWORD
    assert helm.SAMPLE_PASSWORD not in release.values_file.read_text()
    # MLflow's host check (mlflow.server.security_utils.is_allowed_host_header: fnmatch when the pattern has
    # a *) must let in the tracking URI the stack exports, a port-forward and the kubelet's probes
    env = {e["name"]: e["value"] for e in container["env"]}
    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    svc = by_kind["Service"]
    port = svc["spec"]["ports"][0]["port"]
    outputs = (helm.PLATFORM / "outputs.tf").read_text()
    assert "http://${helm_release.mlflow.name}.${local.svc_domain}:5000" in outputs and port == 5000
    assert svc["metadata"]["name"] == release.name
    for host in (
        f"mlflow.steep.svc.cluster.local:{port}",
        f"mlflow:{port}",
        "localhost:5000",
        "10.8.3.7:5000",
    ):
        assert any(fnmatch.fnmatch(host, a) if "*" in a else host == a for a in allowed), host
    assert not any(fnmatch.fnmatch("evil.example.com", a) for a in allowed)


def test_ray_pods_on_azure_carry_the_workload_identity_label() -> None:
    for target, expected in (("azure", "true"), ("aws", None)):
        for template in pod_templates(ray_cluster(target)):
            assert template["metadata"]["labels"].get("azure.workload.identity/use") == expected


def test_prefect_worker_polls_the_stack_work_pool_on_the_stack_server() -> None:
    _, _, objs = rendered()["prefect-worker"]
    [deployment] = [o for o in objs if o["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PREFECT_API_URL"] == "http://prefect-server.steep.svc.cluster.local:4200/api"
    assert container["args"][container["args"].index("--pool") + 1] == "demo-k8s"
    [service] = [o for o in rendered()["prefect-server"][2]
                 if o["kind"] == "Service" and o["metadata"]["name"] == "prefect-server"]  # fmt: skip
    assert service["spec"]["ports"][0]["port"] == 4200


# Each cloud's default StorageClass (a claim without storageClassName gets it): GKE's and AKS's come with the
# cluster (their disk CSI drivers are on unless disabled); EKS marks none as default from 1.30 on, and has no
# EBS driver unless installed, so terraform/aws makes both.
DEFAULT_STORAGE = {
    "gcp": ("google_container_cluster.this", "addons_config", "gce_persistent_disk_csi_driver_config"),
    "azure": ("azurerm_kubernetes_cluster.this", "storage_profile", "disk_driver_enabled"),
}


def volume_claims(target: str) -> list[tuple[str, dict[str, Any]]]:
    """Every PersistentVolumeClaim the releases render, standalone or in a StatefulSet's claim templates."""
    found = []
    for chart, obj in objects(target):
        if obj["kind"] == "PersistentVolumeClaim":
            found.append((chart, obj))
        for claim in (obj.get("spec") or {}).get("volumeClaimTemplates") or []:
            found.append((chart, claim))
    return found


@pytest.mark.parametrize("target", CLOUDS)
def test_every_volume_claim_can_bind(target: str) -> None:
    """A claim binds only if a provisioner serves its StorageClass: prefect-server's Postgres keeps its data
    on one (deployments and schedules must outlive the pod), and on EKS nothing would provision it unless
    the root installs the EBS CSI driver and a default StorageClass."""
    claims = volume_claims(target)
    assert [(chart, c["metadata"]["name"]) for chart, c in claims] == [("prefect-server", "data")]
    assert all(not c["spec"].get("storageClassName") for _, c in claims)  # the default class
    [statefulset] = [o for _, o in objects(target) if o["kind"] == "StatefulSet"]
    # uninstalling (steep destroy) deletes the claim, and with it the disk (reclaim policy Delete)
    assert statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    resources = _resources(target)
    if target in DEFAULT_STORAGE:
        address, block, driver = DEFAULT_STORAGE[target]
        assert driver not in str(resources[address].get(block, "")), (
            f"terraform/{target} sets {block}.{driver}: with the disk CSI driver off, claims never bind"
        )
        return
    default_key = '"storageclass.kubernetes.io/is-default-class"'
    defaults = [
        body for address, body in resources.items()
        if address.startswith("kubernetes_storage_class")
        and unquote(body["metadata"][0]["annotations"].get(default_key, "")) == "true"
    ]  # fmt: skip
    assert len(defaults) == 1, "terraform/aws must make exactly one default StorageClass"
    [default] = defaults
    assert unquote(default["storage_provisioner"]) == "ebs.csi.aws.com"
    assert unquote(default["reclaim_policy"]) == "Delete"  # the disk goes with the claim
    assert unquote(default["volume_binding_mode"]) == "WaitForFirstConsumer"  # in the pod's zone
    assert unquote(default["parameters"]["encrypted"]) == "true"
    addon = resources["aws_eks_addon.ebs_csi"]
    assert unquote(addon["addon_name"]) == "aws-ebs-csi-driver"
    assert "${aws_eks_addon.ebs_csi}" in default["depends_on"]
    # the controller's IAM role (IRSA): only its service account may assume it, with AWS's driver policy
    assert addon["service_account_role_arn"] == "${aws_iam_role.ebs_csi.arn}"
    trust = resources["aws_iam_role.ebs_csi"]["assume_role_policy"]
    assert "system:serviceaccount:kube-system:${local.ebs_csi_sa}" in trust
    assert re.search(r'ebs_csi_sa\s*=\s*"ebs-csi-controller-sa"', (helm.TF / "aws" / "main.tf").read_text())
    attachment = resources["aws_iam_role_policy_attachment.ebs_csi"]
    assert unquote(attachment["policy_arn"]).endswith(":policy/service-role/AmazonEBSCSIDriverPolicy")
    assert attachment["role"] == "${aws_iam_role.ebs_csi.name}"
    assert "controller = {nodeSelector = aws_eks_node_group.system.labels}" in addon["configuration_values"]
    # the platform (and its claim) comes after the class and goes before it
    call = next(b for blk in _root(target)["module"] for n, b in blk.items() if unquote(n) == "platform")
    assert "${kubernetes_storage_class_v1.gp3}" in call["depends_on"]


@pytest.mark.parametrize("target", CLOUDS)
def test_serving_manifests_are_valid_for_the_pinned_kubernetes(target: str) -> None:
    from steep.config import SteepConfig
    from steep.serving.package import ModelRef, render_manifests

    cfg = SteepConfig.model_validate({"project": {"name": "acme"}, "serving": {"api_key_env": "ACME_KEY"}})
    docs = render_manifests(cfg, ModelRef("steep-summarizer", "7", "abc123"), "registry.invalid/acme:v7",
                            "steep-serving", "http://mlflow.steep.svc.cluster.local:5000")  # fmt: skip
    assert sorted(d["kind"] for d in docs) == ["Deployment", "HorizontalPodAutoscaler", "Service"]
    version = f"{pinned_version(target)}.0"
    errors = [e for d in docs for e in validation_errors(d, version)]
    assert not errors, f"steep's serving manifests are invalid for Kubernetes {version}:\n{errors}"
    # the labels of the platform's objects: steep's, and the stack's name (stack_name = project.name)
    for doc in docs:
        for labels in [doc["metadata"]["labels"], *(t["metadata"]["labels"] for t in pod_templates(doc))]:
            assert {k: labels.get(k) for k in STEEP_LABELS} == {
                "app.kubernetes.io/part-of": "steep",
                "steep.dev/stack": "acme",
            }
    # and the validation is not a rubber stamp
    broken = {**docs[0], "spec": {**docs[0]["spec"], "replica": 2}}
    assert validation_errors(broken, version)
