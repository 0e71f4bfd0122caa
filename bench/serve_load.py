"""Serving load: the real server under concurrent clients against what the model itself can do, in one run.

The sides generate for the same texts with the same settings, from the same registered model (default: the
configured project's champion):

- sequential: the model in this process as it was served before steep.generation (fp32, LoRA adapter
  unmerged), one request at a time;
- limit (transformers): the model prepared on the reference engine (adapter merged, serving.precision where
  transformers has it, else fp32), in batches of serving.max_batch_size: today's in-process limit;
- limit (engine): the model prepared as the server prepares it (serving.engine, serving.precision): the most
  the chosen engine does on this machine;
- server: `bentoml serve` (what `steep serve` starts) under --clients concurrent clients on
  POST /v1/completions; then --stream-requests streamed chat completions under the same concurrency, for the
  time to first token.

Each side's mean answer length (tokens) is printed beside its req/s; the two limit sides' answers are scored
(ROUGE-L against the clauses' reference summaries) and compared token for token.

    python bench/serve_load.py [--model champion|VERSION] [--clients 32] [--requests 128] [--set key=value]

Prints req/s, tokens/s, p50/p95 latency and errors per side, then the ratios last; writes a JSON record to
bench/results/. The server's inference log goes to a temporary folder: benchmark traffic never reaches drift.
Run it alone: a second busy process on a 2-core machine skews every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEGAL = REPO / ".." / "shared" / "datasets" / "legal_summarization" / "legal_summarization.jsonl"
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))


@dataclass
class Side:
    name: str
    latencies: list[float] = field(default_factory=list)  # seconds per answered request
    tokens: int = 0  # generated tokens over all answered requests
    errors: int = 0
    seconds: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        lat = sorted(self.latencies) or [float("nan")]
        return lat[min(len(lat) - 1, round(q * (len(lat) - 1)))]

    def line(self) -> str:
        mean = self.tokens / len(self.latencies) if self.latencies else float("nan")
        return (
            f"{self.name:<22} {len(self.latencies):>4} ok  {self.rps:6.2f} req/s"
            f"  {self.tokens_per_s:7.1f} tok/s  {mean:4.1f} tok/answer"
            f"  p50 {statistics.median(self.latencies or [float('nan')]):6.2f} s"
            f"  p95 {self.percentile(0.95):6.2f} s  errors {self.errors}"
        )

    def record(self) -> dict:
        return {**asdict(self), "rps": self.rps, "tokens_per_s": self.tokens_per_s}


def texts(limit: int, max_chars: int) -> tuple[list[str], list[str]]:
    """Clauses of the legal set in file order (truncated to serving.max_text_chars) and their reference
    summaries, else synthetic text (referenced by itself)."""
    if LEGAL.exists():
        rows = [json.loads(line) for line in LEGAL.read_text().splitlines() if line.strip()]
        found = [(r["source_text"][:max_chars], r.get("summary", "")) for r in rows
                 if r.get("source_text", "").strip()]  # fmt: skip
        if found:
            picked = [found[i % len(found)] for i in range(limit)]
            return [t for t, _ in picked], [r for _, r in picked]
    words = "the licensee shall not assign this agreement without the written consent of the licensor"
    tokens = words.split(" ")
    made = [" ".join(tokens[i % 5 :] + tokens[: i % 5])[:max_chars] for i in range(limit)]
    return made, made


def in_process(cfg, selector: str, items: list[str]) -> tuple[Side, object, object, str]:
    """The sequential side; the model prepared on transformers and as the server prepares it; its name."""
    import mlflow

    from steep.endpoints import Runtime
    from steep.serving.model_slot import resolve_version

    registry = Runtime.of(cfg).registry()
    version = resolve_version(registry, selector)
    summarizer = (
        mlflow.pyfunc.load_model(f"models:/{registry.name}/{version}").unwrap_python_model().summarizer
    )
    print(f"model {registry.name} v{version}", flush=True)
    new_tokens = cfg.serving.max_new_tokens

    sequential = Side("sequential")
    summarizer.generate([summarizer.request(items[0], max_new_tokens=new_tokens)])  # warm-up, not timed
    start = time.perf_counter()
    for text in items:
        t0 = time.perf_counter()
        [done] = summarizer.generate([summarizer.request(text, max_new_tokens=new_tokens)])
        sequential.latencies.append(time.perf_counter() - t0)
        sequential.tokens += done.completion_tokens
    sequential.seconds = time.perf_counter() - start
    print(sequential.line(), flush=True)

    engine = mlflow.pyfunc.load_model(f"models:/{registry.name}/{version}").unwrap_python_model().summarizer
    engine.prepare_as_served(cfg)  # what the server does when it loads a version
    reference_precision = cfg.serving.precision if cfg.serving.precision in ("auto", "bf16") else "fp32"
    summarizer.prepare(reference_precision, "transformers")
    for prepared in (summarizer, engine):
        prepared.summarize(items[:2], new_tokens, cfg.serving.max_batch_size)  # warm-up
    return sequential, summarizer, engine, f"{registry.name}:{version}"


def limit_side(cfg, summarizer, batch: list[str], name: str) -> tuple[Side, list[str]]:
    """An engine in this process with every request waiting from the start: iteration-level batching over
    serving.max_batch_size rows, as the server runs it, minus HTTP. -> (the side, its answers)."""
    side = Side(name)
    requests = [summarizer.request(t, max_new_tokens=cfg.serving.max_new_tokens) for t in batch]
    start = time.perf_counter()
    done = summarizer.generate(requests, max_rows=cfg.serving.max_batch_size)
    side.seconds = time.perf_counter() - start
    side.latencies = [side.seconds] * len(done)  # one call: only the throughput is meaningful here
    side.tokens = sum(d.completion_tokens for d in done)
    print(side.line(), flush=True)
    return side, [d.text for d in done]


async def load(url: str, model: str, items: list[str], clients: int, headers: dict) -> Side:
    """POST /v1/completions, one text per request, from `clients` concurrent clients."""
    import httpx

    side = Side("server")
    pending = list(reversed(items))

    async def client(http: httpx.AsyncClient) -> None:
        while pending:
            text = pending.pop()
            t0 = time.perf_counter()
            try:
                resp = await http.post(f"{url}/v1/completions", json={"model": model, "prompt": text})
                if resp.status_code == 200:
                    side.latencies.append(time.perf_counter() - t0)
                    side.tokens += resp.json()["usage"]["completion_tokens"]
                else:
                    side.errors += 1
            except httpx.HTTPError:
                side.errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits, headers=headers) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        side.seconds = time.perf_counter() - start
    return side


async def first_tokens(url: str, model: str, items: list[str], clients: int, headers: dict) -> Side:
    """Streamed chat completions: latency here is the time to the first piece of text."""
    import httpx

    side = Side("streaming")
    pending = list(reversed(items))

    async def client(http: httpx.AsyncClient) -> None:
        while pending:
            text = pending.pop()
            body = {"model": model, "stream": True, "messages": [{"role": "user", "content": text}]}
            t0 = time.perf_counter()
            first = None
            try:
                async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
                    async for line in resp.aiter_lines():
                        if line.startswith("data: {") and '"content":"' in line and first is None:
                            first = time.perf_counter() - t0
                        if line == "data: [DONE]":
                            break
                if resp.status_code == 200 and first is not None:
                    side.latencies.append(first)
                else:
                    side.errors += 1
            except httpx.HTTPError:
                side.errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits, headers=headers) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        side.seconds = time.perf_counter() - start
    return side


def served(cfg, selector: str, model: str, items: list[str], args: argparse.Namespace) -> tuple[Side, Side]:
    import httpx

    from steep import tracking
    from steep.endpoints import Runtime
    from steep.serving import process
    from steep.serving.auth import api_key
    from steep.stack.daemons import free_port

    with tempfile.TemporaryDirectory(prefix="steep-serve-bench-") as tmp:
        server_cfg = cfg.model_copy(deep=True)
        server_cfg.serving.model_alias = selector
        server_cfg.project.home = tmp  # its inference log: not the project's
        port = free_port()
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
            for text in items[: args.warmup]:  # untimed: first batches pay one-off costs
                httpx.post(
                    f"{url}/v1/completions",
                    json={"model": model, "prompt": text},
                    headers=headers,
                    timeout=600,
                )
            side = asyncio.run(load(url, model, items, args.clients, headers))
            print(side.line(), flush=True)
            streams = asyncio.run(
                first_tokens(url, model, items[: args.stream_requests], args.clients, headers)
            )
            return side, streams
        finally:
            process.stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", "-c", type=Path, default=None, help="steep.yaml (default: found upward)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="config override key=value")
    parser.add_argument("--model", default=None, help="alias or version (default: serving.model_alias)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients against the server")
    parser.add_argument("--requests", type=int, default=128, help="requests for the limit and server sides")
    parser.add_argument("--sequential-requests", type=int, default=24, help="requests made one at a time")
    parser.add_argument("--stream-requests", type=int, default=64, help="streamed requests (first token)")
    parser.add_argument("--warmup", type=int, default=16, help="untimed server requests before the load")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_load_cpu.json", help="the JSON record")
    args = parser.parse_args()

    from steep import hardware
    from steep.config import find_config, load_config
    from steep.quiet import quiet_third_parties

    quiet_third_parties()
    cfg = load_config(args.config or find_config(), args.sets)
    selector = args.model or cfg.serving.model_alias
    s = cfg.serving
    load_before = os.getloadavg()
    print(
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f}; serving: max_batch_size "
        f"{s.max_batch_size}, max_new_tokens {s.max_new_tokens}, precision {s.precision}, engine {s.engine}; "
        "one text per request",
        flush=True,
    )
    pool, references = texts(max(args.requests, args.sequential_requests), s.max_text_chars)
    sequential, reference, engine, model = in_process(cfg, selector, pool[: args.sequential_requests])
    batch = pool[: args.requests]
    # the engine's limit before and after the server: the machine's own drift shows, the ratio uses both
    base, base_texts = limit_side(cfg, reference, batch, f"limit (transformers {reference.precision})")
    before, texts_before = limit_side(cfg, engine, batch, f"limit ({engine.engine} {engine.precision})")
    server, streaming = served(cfg, selector, model, batch, args)
    after, _ = limit_side(cfg, engine, batch, "limit again")
    limit = Side("limit", before.latencies + after.latencies, before.tokens + after.tokens, 0,
                 before.seconds + after.seconds)  # fmt: skip
    ttft = statistics.median(streaming.latencies or [float("nan")])
    print(
        f"streaming: time to first token p50 {ttft:.2f} s  p95 {streaming.percentile(0.95):.2f} s "
        f"over {len(streaming.latencies)} streams ({args.clients} clients), errors {streaming.errors}"
    )
    from steep.scoring.scores import score

    gold = references[: args.requests]
    quality = {
        "rougeL_transformers": 100 * score(base_texts, gold).rougeL,
        "rougeL_engine": 100 * score(texts_before, gold).rougeL,
        "identical_answers": sum(a == b for a, b in zip(base_texts, texts_before, strict=True)),
    }
    print(
        f"quality on {len(gold)} clauses: ROUGE-L transformers {quality['rougeL_transformers']:.2f}, "
        f"{engine.engine} {engine.precision} {quality['rougeL_engine']:.2f} "
        f"({quality['rougeL_engine'] - quality['rougeL_transformers']:+.2f}); "
        f"identical answers {quality['identical_answers']}/{len(gold)}"
    )
    ratios = {
        "server_vs_limit_transformers": server.rps / base.rps if base.rps else float("nan"),
        "server_vs_limit": server.rps / limit.rps if limit.rps else float("nan"),
        "server_vs_sequential": server.rps / sequential.rps if sequential.rps else float("nan"),
        "limit_vs_sequential": limit.rps / sequential.rps if sequential.rps else float("nan"),
        "ttft_p50_s": ttft,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "processor": hardware.cpu_name(),
                            "native_bf16": hardware.cpu_has_native_bf16(),
                            "load_average_before": load_before, "load_average_after": os.getloadavg()},
                "model": model,
                "serving": s.model_dump(mode="json"),
                "clients": args.clients,
                "engine": {"engine": engine.engine, "precision": engine.precision},
                "sides": [side.record() for side in (sequential, base, before, server, after, streaming)],
                "quality": quality,
                "limit_mean_rps": limit.rps,
                "ratios": ratios,
            },
            indent=2,
        )
    )  # fmt: skip
    print(f"load average after {os.getloadavg()[0]:.2f}; record: {args.out}")
    print(
        f"ratios: server / limit (transformers) {ratios['server_vs_limit_transformers']:.2f}x "
        "(target >= 2.0)   "
        f"server / limit ({engine.engine}) {ratios['server_vs_limit']:.2f}x (target >= 0.85; the mean of the "
        f"two engine limit runs)   server / sequential {ratios['server_vs_sequential']:.2f}x   "
        f"TTFT p50 {ttft:.2f} s (target <= 2)   errors {server.errors + streaming.errors}"
    )


if __name__ == "__main__":
    main()
