"""CLI start-up stays light: `steep --help`, every command module imported, loads no torch, Ray or MLflow."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "ray", "transformers", "peft", "mlflow")  # seconds to import: only commands that use them


def test_the_cli_imports_neither_torch_nor_ray():
    probe = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from steep.cli.app import app\n"
        "import steep.cli\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        f"print(json.dumps([result.exit_code, sorted(m for m in {HEAVY!r} if m in sys.modules)]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    code, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert code == 0 and loaded == [], f"`steep --help` imported {loaded}"
