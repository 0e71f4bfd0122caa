"""Serving load: the real BentoML server under concurrent clients vs the same model, one request at a time.

Both sides serve the same registered model (default: the champion of the configured project) on the same
texts with the same generation settings, in the same run. The baseline loads the model in this process and
calls it once per request, sequentially, with no batching; the server is `bentoml serve` (what `steep serve`
starts) with adaptive batching from `serving`, hit by --clients concurrent HTTP clients. The server's
inference log goes to a temporary folder, so benchmark traffic never reaches drift monitoring.

    python bench/serve_load.py [--model champion|VERSION] [--clients 32] [--requests 256] [--set key=value]

Prints requests/s, p50 and p95 latency and errors per side, then the throughput ratio last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEGAL = REPO / ".." / "shared" / "datasets" / "legal_summarization" / "legal_summarization.jsonl"
sys.path.insert(0, str(REPO))


@dataclass
class Result:
    name: str
    latencies: list[float]
    errors: int
    seconds: float

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        lat = sorted(self.latencies) or [float("nan")]
        p50 = statistics.median(lat) * 1000
        p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))] * 1000
        return (
            f"{self.name:<44} {len(self.latencies):>4} ok  {self.rps:8.2f} req/s  "
            f"p50 {p50:8.1f} ms  p95 {p95:8.1f} ms  errors {self.errors}"
        )


def texts(limit: int, max_chars: int) -> list[str]:
    """Clauses of the legal set (truncated to serving.max_text_chars), else synthetic text."""
    if LEGAL.exists():
        rows = [json.loads(line) for line in LEGAL.read_text().splitlines() if line.strip()]
        found = [r["source_text"][:max_chars] for r in rows if r.get("source_text", "").strip()]
        if found:
            return [found[i % len(found)] for i in range(limit)]
    words = "the licensee shall not assign this agreement without the written consent of the licensor"
    tokens = words.split(" ")
    return [" ".join(tokens[i % 5 :] + tokens[: i % 5])[:max_chars] for i in range(limit)]


def run_baseline(cfg, selector: str, items: list[str]) -> Result:
    """The model in this process, one request (one text) at a time: no server, no batching."""
    from steep.serving.model_slot import registry_slot

    slot = registry_slot(cfg, selector)
    slot.refresh()
    model = slot.current
    print(f"model {model.name} v{model.version} (run {model.run_id[:12]})", flush=True)
    new_tokens = cfg.serving.max_new_tokens
    model.summarizer.summarize(items[:2], max_new_tokens=new_tokens)  # warm-up, not timed
    latencies, errors = [], 0
    start = time.perf_counter()
    for text in items:
        t0 = time.perf_counter()
        try:
            model.summarizer.summarize([text], max_new_tokens=new_tokens, batch_size=1)
            latencies.append(time.perf_counter() - t0)
        except Exception:
            errors += 1
    return Result(
        "baseline: in-process, one request at a time", latencies, errors, time.perf_counter() - start
    )


async def load(url: str, items: list[str], clients: int, api_key: str | None) -> Result:
    import httpx

    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in items:
        queue.put_nowait(text)
    latencies: list[float] = []
    errors = 0
    headers = {"x-api-key": api_key} if api_key else {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while not queue.empty():
            text = queue.get_nowait()
            t0 = time.perf_counter()
            try:
                resp = await http.post(f"{url}/summarize", json={"texts": text}, headers=headers)
                if resp.status_code == 200 and len(resp.json()) == 1:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1
            except httpx.HTTPError:
                errors += 1

    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - start
    return Result(f"server: {clients} concurrent clients, batching", latencies, errors, seconds)


def run_server(cfg, selector: str, items: list[str], clients: int, warmup: int) -> Result:
    import httpx

    from steep import tracking
    from steep.runtime import Runtime
    from steep.serving import process
    from steep.serving.auth import api_key

    with tempfile.TemporaryDirectory(prefix="steep-serve-bench-") as tmp:
        server_cfg = cfg.model_copy(deep=True)
        server_cfg.serving.model_alias = selector
        server_cfg.project.home = tmp  # its inference log: not the project's
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        registry = Runtime.of(cfg).tracking_uri or tracking.default_tracking_uri(cfg)
        log = Path(tmp) / "server.log"
        proc = process.start(server_cfg, "127.0.0.1", port, log, extra_env={"MLFLOW_TRACKING_URI": registry})
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                process.wait_ready(url, proc, timeout_s=300)
            except Exception:
                print(log.read_text()[-3000:], file=sys.stderr)
                raise
            key = api_key(cfg.serving)
            headers = {"x-api-key": key} if key else {}
            for text in items[:warmup]:  # warm-up: the model and BentoML's batching estimator, not timed
                httpx.post(f"{url}/summarize", json={"texts": text}, headers=headers, timeout=600)
            return asyncio.run(load(url, items, clients, key))
        finally:
            process.stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", "-c", type=Path, default=None, help="steep.yaml (default: ./steep.yaml)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="config override key=value")
    parser.add_argument(
        "--model", default=None, help="alias or version to serve (default: serving.model_alias)"
    )
    parser.add_argument("--clients", type=int, default=32, help="concurrent HTTP clients against the server")
    parser.add_argument("--requests", type=int, default=256, help="requests sent to the server")
    parser.add_argument("--baseline-requests", type=int, default=64, help="requests made one at a time")
    parser.add_argument("--warmup", type=int, default=16, help="untimed requests before the server load")
    args = parser.parse_args()

    from steep.cli.app import quiet_third_parties
    from steep.config import load_config

    quiet_third_parties()
    cfg = load_config(args.config, args.sets)
    selector = args.model or cfg.serving.model_alias
    s = cfg.serving
    print(
        f"serving: max_batch_size {s.max_batch_size}, max_latency_ms {s.max_latency_ms}, "
        f"max_new_tokens {s.max_new_tokens}; one text per request",
        flush=True,
    )
    pool = texts(max(args.requests, args.baseline_requests), cfg.serving.max_text_chars)
    baseline = run_baseline(cfg, selector, pool[: args.baseline_requests])
    print(baseline.line(), flush=True)
    served = run_server(cfg, selector, pool[: args.requests], args.clients, args.warmup)
    print(served.line(), flush=True)
    ratio = served.rps / baseline.rps if baseline.rps else float("nan")
    print(f"throughput ratio (server / baseline): {ratio:.2f}x")


if __name__ == "__main__":
    main()
