"""Model quality of the default `steep run`, with the gate's intervals, on two kinds of summarization data.

- legal: the legal summarization set (../shared/datasets; contract clauses -> plain-English summaries);
- packages: software documentation -> one-line descriptions, built here from the metadata of the Python
  packages installed beside steep (bench/package_docs.py: each distribution's long description, cleaned to
  prose, and its author-written `Summary`). Nothing is downloaded: the packages are the ones
  `bash scripts/bootstrap.sh` installed, so the set changes with the resolver; the record says how many
  descriptions were kept and why the others were dropped.

Each case is the default steep.yaml of this checkout (only data and project.home changed) run as a user runs
it, `steep run` in a fresh folder; the scores and the challenger's paired bootstrap intervals (95%, whole
documents resampled) come from the run's MLflow metrics.

    python bench/quality.py [--case legal|packages|all] [--set key=value ...]

Prints each case's table (challenger, base, lead-1; the challenger's lead with its interval) and wall time,
writes a JSON record to bench/results/quality_cpu.json. Run it alone: the wall time is part of the result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import package_docs  # noqa: E402
from steep import hardware  # noqa: E402

LEGAL = REPO.parent / "shared" / "datasets" / "legal_summarization" / "all_v1.json"
RESULTS = REPO / "bench" / "results"
MODELS = ("challenger", "base", "lead1")
METRICS = ("rouge1", "rouge2", "rougeL")


def run_case(name: str, sets: list[str], folder: Path) -> dict:
    """`steep run` of this checkout's steep.yaml in `folder`; -> its scores and intervals from MLflow."""
    home = folder / ".steep"
    argv = [sys.executable, "-m", "steep", "run", "-c", str(REPO / "steep.yaml"),
            "--set", f"project.home={home}", *[a for s in sets for a in ("--set", s)]]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'bench.db'}"}
    home.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - t0
    if done.returncode != 0:
        raise SystemExit(
            f"{name}: steep run failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}"
        )
    import mlflow

    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    [run] = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="metrics.eval_challenger_rougeL >= 0",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    m = run.data.metrics
    scores = {model: {k: m[f"eval_{model}_{k}"] * 100 for k in METRICS} for model in MODELS}
    intervals = {
        other: {
            k: [m[f"delta_{other}_{k}{end}"] * 100 for end in ("", "_low", "_high")]
            for k in METRICS
            if f"delta_{other}_{k}" in m
        }
        for other in ("base", "lead1")
    }
    return {"name": name, "wall_s": round(wall, 1), "rows_test": int(m.get("eval_challenger_n", 0)),
            "scores": scores, "intervals": intervals, "run_id": run.info.run_id,
            "output_tail": done.stdout.splitlines()[-14:]}  # fmt: skip


def table(case: dict) -> str:
    lines = [f"{case['name']}: {case['rows_test']} test rows, steep run {case['wall_s']:.0f} s"]
    lines.append(f"  {'model':<11}" + "".join(f"{k:>9}" for k in ("ROUGE-1", "ROUGE-2", "ROUGE-L")))
    for model in MODELS:
        lines.append(f"  {model:<11}" + "".join(f"{case['scores'][model][k]:9.2f}" for k in METRICS))
    for other, per in case["intervals"].items():
        if "rougeL" in per:
            d, lo, hi = per["rougeL"]
            lines.append(f"  challenger vs {other}: ROUGE-L {d:+.2f} [{lo:+.2f}, {hi:+.2f}]")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=["legal", "packages", "all"], default="all")
    parser.add_argument("--set", action="append", default=[], help="extra steep.yaml overrides, key=value")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    cases = []
    with tempfile.TemporaryDirectory(prefix="steep-quality-") as tmp:
        root = Path(tmp)
        if args.case in ("legal", "all"):
            sets = [f"data.source={LEGAL}", *args.set]
            cases.append(run_case("legal", sets, root / "legal"))
            print(table(cases[-1]), flush=True)
        if args.case in ("packages", "all"):
            data = root / "packages.jsonl"
            docs = package_docs.write_installed(data)
            print(docs.describe(), flush=True)
            sets = [
                f"data.source={data}", "data.sha256=null", "data.id_column=id", "data.text_column=text",
                "data.summary_column=summary", "data.group_column=null", "validation.min_rows=50",
                "model.instruction=Describe this software package in one sentence.", *args.set,
            ]  # fmt: skip
            case = run_case("packages", sets, root / "packages")
            case["rows"], case["dropped"] = len(docs.rows), dict(docs.dropped)
            cases.append(case)
            print(table(cases[-1]), flush=True)
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": hardware.cpu_name(),
        "native_bf16": hardware.cpu_has_native_bf16(),
        "cpus": os.cpu_count(),
        "load_before": round(load, 2),
        "cases": cases,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quality_cpu.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nload average before: {load:.2f}; record: bench/results/quality_cpu.json")
    for case in cases:  # last: the figure the issue asks for
        d, lo, hi = case["intervals"]["lead1"]["rougeL"]
        took = case["wall_s"]
        print(f"{case['name']}: challenger vs lead-1 ROUGE-L {d:+.2f} [{lo:+.2f}, {hi:+.2f}] in {took:.0f} s")


if __name__ == "__main__":
    main()
