"""Static checks of every Terraform module: fmt, HCL parse with cross-references, the stack contract.

The cloud providers cannot be installed offline, so `terraform validate` cannot run for aws/gcp/azure;
these checks catch what it would: an undeclared variable, a dangling reference, a missing output.
"""

from __future__ import annotations

import subprocess

import pytest

from steep.stack import prices
from steep.stack.contract import CONTRACT
from steep.stack.terraform import terraform_binary, terraform_sources
from tests.terraform.hcl import load_module, unquote

TF = terraform_sources()
MODULES = ["local", "aws", "gcp", "azure", "modules/platform"]
TARGETS = ["local", "aws", "gcp", "azure"]


def test_terraform_fmt_check() -> None:
    done = subprocess.run([terraform_binary(), "fmt", "-check", "-recursive", "-diff", str(TF)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, f"run `terraform fmt -recursive terraform`:\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("name", MODULES)
def test_every_reference_resolves(name: str) -> None:
    mod = load_module(TF / name)
    assert mod.resources or mod.modules, f"{name}: nothing parsed"
    problems = []
    for kind, ref, attr in mod.references():
        if kind == "var" and ref not in mod.variables:
            problems.append(f"var.{ref} is not declared")
        elif kind == "local" and ref not in mod.locals:
            problems.append(f"local.{ref} is not defined")
        elif kind == "module" and ref not in mod.modules:
            problems.append(f"module.{ref} is not declared")
        elif kind == "data" and f"{ref}.{attr}" not in mod.data:
            problems.append(f"data.{ref}.{attr} is not declared")
    for address in mod.resource_references():
        if address not in mod.resources:
            problems.append(f"{address} is not a resource of {name}")
    assert not problems, f"{name}:\n" + "\n".join(sorted(set(problems)))


@pytest.mark.parametrize("name", MODULES)
def test_variables_are_documented_and_used(name: str) -> None:
    mod = load_module(TF / name)
    used = {ref for kind, ref, _ in mod.references() if kind == "var"}
    for var, body in mod.variables.items():
        assert unquote(body.get("description", "")).strip(), f"{name}: variable {var} has no description"
        assert var in used, f"{name}: variable {var} is declared but never used"


@pytest.mark.parametrize("name", MODULES)
def test_every_resource_provider_is_required(name: str) -> None:
    mod = load_module(TF / name)
    kinds = {address.split(".")[0] for address in mod.resources} | {a.split(".")[0] for a in mod.data}
    missing = {k.split("_")[0] for k in kinds} - mod.providers
    assert not missing, f"{name}: add {missing} to required_providers"


@pytest.mark.parametrize("target", TARGETS)
def test_targets_export_the_stack_contract(target: str) -> None:
    mod = load_module(TF / target)
    missing = [name for name in CONTRACT if name not in mod.outputs]
    assert not missing, f"terraform/{target} lacks contract outputs {missing}"
    assert all(unquote(o.get("description", "")) for o in mod.outputs.values())


@pytest.mark.parametrize("target", ["aws", "gcp", "azure"])
def test_cloud_targets_validate_input_tag_the_stack_and_call_the_platform(target: str) -> None:
    mod = load_module(TF / target)
    for var in ("region", "stack_name", "gpu_nodes", "cpu_nodes", "gpu_instance_type"):
        assert mod.variables[var].get("validation"), f"{target}: variable {var} needs a validation block"
    assert unquote(mod.variables["region"]["default"]) == prices.DEFAULT_REGION[target]
    for machine in ("cpu", "gpu"):
        default = unquote(mod.variables[f"{machine}_instance_type"]["default"])
        assert default == prices.DEFAULTS[target][machine], f"{target}: price table and default disagree"
    assert any("var.stack_name" in e for e in mod.expressions if "stack" in e), (
        "resources must name the stack"
    )
    call = mod.modules["platform"]
    assert unquote(call["source"]) == "../modules/platform"
    platform = load_module(TF / "modules" / "platform")
    passed = {k for k in call if k not in ("source", "depends_on") and not k.startswith("__")}  # __comments__
    assert passed <= set(platform.variables), (
        f"{target}: unknown module inputs {passed - set(platform.variables)}"
    )
    required = {v for v, body in platform.variables.items() if "default" not in body}
    assert required <= passed, f"{target}: platform inputs not passed: {required - passed}"


def test_platform_has_the_services_the_stack_needs() -> None:
    mod = load_module(TF / "modules" / "platform")
    charts = {
        unquote(body["chart"])
        for address, body in mod.resources.items()
        if address.startswith("helm_release")
    }
    assert {"mlflow", "kuberay-operator", "ray-cluster", "prefect-server", "prefect-worker",
            "metrics-server"} <= charts  # fmt: skip
    assert "kubernetes_namespace.serving" in mod.resources
    outputs = set(mod.outputs)
    assert {"mlflow_tracking_uri", "prefect_api_url", "ray_address", "serving_namespace"} <= outputs


def test_local_target_destroy_provisioner_reads_only_self() -> None:
    """Destroy-time provisioners may read only self/each/count: everything else must be a trigger."""
    mod = load_module(TF / "local")
    body = mod.resources["null_resource.service"]
    destroy = [p for p in body["provisioner"] if unquote(next(iter(p.values())).get("when", "")) == "destroy"]
    assert destroy, "the local services need a destroy-time provisioner that stops them"
    text = str(destroy)
    assert "var." not in text and "local." not in text
