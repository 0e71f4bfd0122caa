"""Security scan of every Terraform module with checkov, offline: no failed check, every skip explained.

checkov pins packages that clash with steep's (packaging, networkx, boto3), so it runs from its own venv:
$STEEP_CHECKOV (a checkov executable) when set, else a venv created once under the temp folder
(`python -m venv <tmp>/steep-checkov-3.3.30 && <venv>/bin/pip install checkov==3.3.30`; needs the package
index the first time, about two minutes).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from steep.stack.terraform import terraform_sources

CHECKOV_VERSION = "3.3.30"
TF = terraform_sources()
_SKIP = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


def checkov_executable() -> str:
    if os.environ.get("STEEP_CHECKOV"):
        return os.environ["STEEP_CHECKOV"]
    venv = Path(tempfile.gettempdir()) / f"steep-checkov-{CHECKOV_VERSION}"
    exe = venv / "bin" / "checkov"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", f"checkov=={CHECKOV_VERSION}"], check=True
        )
    return str(exe)


@pytest.fixture(scope="module")
def report() -> dict:
    done = subprocess.run(
        [checkov_executable(), "-d", str(TF), "--framework", "terraform", "--skip-download",
         "--compact", "-o", "json"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )  # fmt: skip
    assert done.stdout.strip(), done.stderr[-3000:]
    data = json.loads(done.stdout)
    return data[0] if isinstance(data, list) else data


def test_no_failed_check(report: dict) -> None:
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]}) {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert not failed, "fix these or suppress each with a reason:\n" + "\n".join(failed)
    assert report["summary"]["passed"] > 100


def test_every_suppression_carries_a_reason_and_is_used(report: dict) -> None:
    written = {}
    for file in TF.rglob("*.tf"):
        for number, line in enumerate(file.read_text().splitlines(), 1):
            match = _SKIP.search(line)
            if match:
                reason = (match.group(2) or "").strip()
                assert len(reason) >= 20, f"{file}:{number}: {match.group(1)} needs a reason after the colon"
                written[(file.relative_to(TF).as_posix(), match.group(1))] = reason
    used = {(c["file_path"].lstrip("/"), c["check_id"]) for c in report["results"]["skipped_checks"]}
    stale = set(written) - used
    assert not stale, f"suppressions that match no finding (remove them): {sorted(stale)}"
