"""steep as it installs: one top-level name, a quiet build, prefect.yaml where a Prefect user looks for it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENTS = {"finetune", "drift-check", "teardown"}


def test_prefect_yaml_at_the_root_lists_the_deployments_the_wheel_carries():
    root = REPO / "prefect.yaml"
    shipped = REPO / "steep" / "flows" / "prefect.yaml"  # package data: what `steep deploy` reads
    assert root.resolve() == shipped.resolve(), "the root prefect.yaml and the packaged one must be one file"
    spec = yaml.safe_load(root.read_text())
    assert {d["name"] for d in spec["deployments"]} == DEPLOYMENTS
    for d in spec["deployments"]:  # `prefect deploy` at the root finds each flow's file
        path, _, flow = d["entrypoint"].partition(":")
        assert (REPO / path).is_file() and f"def {flow}(" in (REPO / path).read_text(), d["entrypoint"]
    assert "steep deploy" in root.read_text().split("\nname:", 1)[0]  # the header names the command


def clean_checkout(dest: Path) -> Path:
    """The files git tracks or would track (nothing ignored: no venv, build or egg-info), copied to `dest`."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        src = REPO / name
        if src.is_file() or src.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name, follow_symlinks=False)
    return dest


@pytest.mark.integration
def test_the_wheel_builds_without_warnings_and_installs_only_steep(tmp_path):
    src = clean_checkout(tmp_path / "src")
    # pip's own notes about this machine's index settings are not the build backend's: no config file
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    output = built.stdout + built.stderr
    assert built.returncode == 0, output[-3000:]
    assert [line for line in output.splitlines() if "warning" in line.lower()] == []
    (wheel,) = (tmp_path / "dist").glob("steep-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"steep", wheel.name.split("-py3")[0] + ".dist-info"}
    assert {
        "steep/flows/prefect.yaml",
        "steep/terraform/local/main.tf",
        "steep/bentos/summarizer/static/index.html",
    } <= set(names)

    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    before = set(os.listdir(site))
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    added = set(os.listdir(site)) - before
    assert {n for n in added if not n.endswith(".dist-info")} == {"steep"}, added
