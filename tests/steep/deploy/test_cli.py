"""`steep deploy --dry-run`: the filled plan, printed without a server."""

from __future__ import annotations

import subprocess
import sys

import yaml


def test_dry_run_prints_the_plan_without_a_server(tmp_path):
    (tmp_path / "steep.yaml").write_text("project: {name: steep}\n")  # no prefect.yaml: steep's own is used
    out = subprocess.run(
        [sys.executable, "-m", "steep", "deploy", "--dry-run", "--set", f"project.home={tmp_path / 'h'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env={"PATH": "", "HOME": str(tmp_path),
        "PREFECT_HOME": str(tmp_path / "p")},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    shown = yaml.safe_load(out.stdout)
    assert [d["name"] for d in shown["deployments"]] == ["finetune", "drift-check", "teardown"]
    assert shown["deployments"][0]["parameters"]["cfg"] == "<steep.yaml as resolved now>"
    assert shown["work_pool"] == {"name": "steep-process", "type": "process"}
    assert "provision a stack first" in shown["prefect_api"]
