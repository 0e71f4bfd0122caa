"""bench/gpu_train.py runs end to end: a CPU smoke run of its code on tiny shapes (numbers not judged)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from tests.conftest import REPO


def test_gpu_benchmark_code_runs_on_tiny_shapes_and_writes_its_record(tmp_path):
    cmd = [sys.executable, str(REPO / "bench" / "gpu_train.py"), "--device", "cpu", "--tiny", "--steps", "4",
           "--shapes", "smollm2-135m,t5-base", "--long", "96", "--out", str(tmp_path)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-1].startswith("ratio steep / HF Trainer+PEFT tokens/s: min ")
    (record_file,) = tmp_path.glob("gpu_*-tiny.json")
    record = json.loads(record_file.read_text())
    expected = {f"{shape}/{load}" for shape in ("smollm2-135m", "t5-base") for load in ("legal", "long")}
    assert set(record["ratios"]) == expected
    sides = {(r["shape"], r["workload"], r["side"]) for r in record["results"]}
    assert ("t5-base", "long", "HF Trainer+PEFT") in sides and ("smollm2-135m", "legal", "steep") in sides
    assert ("smollm2-135m", "legal", "steep packing=true") in sides  # causal shapes only
    assert ("t5-base", "legal", "steep packing=true") not in sides
    assert all(math.isfinite(r["tokens_per_s"]) and r["tokens_per_s"] > 0 for r in record["results"])
    assert record["versions"]["torch"] and record["device"]
