"""Model quality of the default `steep run`, with the gate's intervals, on two kinds of summarization data.

- legal: the legal summarization set (../shared/datasets; contract clauses -> plain-English summaries);
- packages: software documentation -> one-line descriptions, built here from the metadata of the Python
  packages installed beside steep (each distribution's long description and its author-written `Summary`).
  Nothing is downloaded: the packages are the ones `bash scripts/bootstrap.sh` installed.

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
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEGAL = REPO.parent / "shared" / "datasets" / "legal_summarization" / "all_v1.json"
RESULTS = REPO / "bench" / "results"
MODELS = ("challenger", "base", "lead1")
METRICS = ("rouge1", "rouge2", "rougeL")

_MARKUP = [
    (re.compile(r"!\[[^\]]*\]\([^)]*\)"), " "),  # markdown images (badges)
    (re.compile(r"\[([^\]]*)\]\([^)]*\)"), r"\1"),  # markdown links -> their text
    (re.compile(r"^\s*\.\. .*$", re.M), " "),  # rst directives
    (re.compile(r"\|[A-Za-z0-9_ -]+\|"), " "),  # rst substitutions (badges)
    (re.compile(r"`+"), ""),
    (re.compile(r"^[#=\-~^*]{2,}\s*$", re.M), " "),  # rst heading underlines, rules
    (re.compile(r"^#+\s*", re.M), ""),  # markdown heading marks
    (re.compile(r"<[^>]+>"), " "),  # html tags
    (re.compile(r"https?://\S+"), " "),
    (re.compile(r"\s+"), " "),
]


def package_descriptions(out: Path, min_chars: int = 400, max_chars: int = 2000) -> int:
    """Write id/text/summary JSONL from the installed distributions' metadata; -> rows written."""
    rows, seen = [], set()
    for dist in distributions():
        meta = dist.metadata
        name = (meta.get("Name") or "").lower()
        summary = " ".join((meta.get("Summary") or "").split())
        text = meta.get_payload() or meta.get("Description") or ""  # type: ignore[attr-defined]
        for pattern, repl in _MARKUP:
            text = pattern.sub(repl, text)
        text = text.strip()
        if not name or name in seen or name == "steep" or summary.lower() in seen:
            continue
        if len(text) < min_chars or not 4 <= len(summary.split()) <= 30:
            continue
        seen |= {name, summary.lower()}
        rows.append({"id": name, "text": text[:max_chars], "summary": summary})
    rows.sort(key=lambda r: r["id"])
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


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
            rows = package_descriptions(data)
            sets = [
                f"data.source={data}", "data.sha256=null", "data.id_column=id", "data.text_column=text",
                "data.summary_column=summary", "data.group_column=null", "validation.min_rows=50",
                "model.instruction=Describe this software package in one sentence.", *args.set,
            ]  # fmt: skip
            case = run_case("packages", sets, root / "packages")
            case["rows"] = rows
            cases.append(case)
            print(table(cases[-1]), flush=True)
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
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
