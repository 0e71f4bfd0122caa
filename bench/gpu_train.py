"""GPU training throughput: steep's training step vs Hugging Face Trainer + PEFT, bf16, LoRA r16 all-linear.

Three model shapes with random-init weights (the shapes of SmolLM2-135M, Llama-3.2-1B and T5-base), two
workloads: examples following the legal set's length distribution, and a long-sequence case. Both sides see
the same examples in the same order of epochs, the same LoRA config and the same batch; the baseline is the
Trainer as users write it (`bf16=True`, padding to the longest example of each batch, SDPA attention, the
model's own full-vocabulary loss). steep's side is its real step: length-grouped batches, logits and loss
only on label positions, bf16 autocast, fused AdamW. With --ray the same step also runs inside a one-worker
Ray Train TorchTrainer, to show what the Ray path keeps of the bare loop.

MFU convention: 6 x N x tokens/s over the device's dense bf16 peak, N = all parameters (frozen ones
included), attention FLOPs ignored. LoRA skips the frozen weights' gradients, so the useful work is nearer
4N: the figure over-states both sides by the same factor.

    python bench/gpu_train.py                      # on a GPU machine; writes bench/results/gpu_<device>.json
    python bench/gpu_train.py --device cpu --tiny --steps 3    # a smoke run of the same code on CPU

Prints a table, then the ratio last.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LEGAL = REPO.parent / "shared" / "datasets" / "legal_summarization" / "legal_summarization.jsonl"

SHAPES = {  # the real models' config values; weights are random
    "smollm2-135m": ("causal", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                    num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                    tie_word_embeddings=True, max_position_embeddings=8192)),
    "llama-3.2-1b": ("causal", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                    num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                    tie_word_embeddings=True, max_position_embeddings=8192,
                                    rope_theta=500000.0)),
    "t5-base": ("seq2seq", dict(d_model=768, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12,
                                d_kv=64, vocab_size=32128)),
}  # fmt: skip
TINY = {
    "smollm2-135m": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=512),
    "llama-3.2-1b": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=1024),
    "t5-base": dict(d_model=64, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=16,
                    vocab_size=512),
}  # fmt: skip
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


@dataclass
class Result:
    shape: str
    workload: str
    side: str
    tokens_per_s: float
    step_ms: float
    peak_gib: float
    mfu: float | None


# --------------------------------------------------------------------------------------------- workload
def legal_lengths(n: int, max_prompt: int, max_target: int, seed: int) -> tuple[list[tuple[int, int]], str]:
    """(prompt, target) token lengths from the legal set (about 1.35 tokens a word), else a fit of it."""
    rng = random.Random(seed)
    if LEGAL.is_file():
        rows = [json.loads(line) for line in LEGAL.read_text().splitlines() if line.strip()]
        pairs = [
            (min(max_prompt, 24 + int(1.35 * len(r["source_text"].split()))),
             min(max_target, 2 + int(1.35 * len(r["summary"].split()))))
            for r in rows
        ]  # fmt: skip
        return [rng.choice(pairs) for _ in range(n)], "legal set (words x 1.35)"
    draw = [
        (
            min(max_prompt, 24 + int(rng.lognormvariate(4.7, 0.7))),
            min(max_target, int(rng.lognormvariate(3.2, 0.5))),
        )
        for _ in range(n)
    ]
    return draw, "log-normal fit of the legal set (../shared not found)"


def make_examples(lengths: list[tuple[int, int]], kind: str, vocab: int, seed: int) -> list[dict]:
    """Token ids in steep's example format: causal = prompt + target with labels on the target only."""
    from steep.models import IGNORE_INDEX

    g = torch.Generator().manual_seed(seed)
    out = []
    for p, s in lengths:
        prompt = torch.randint(10, vocab, (p,), generator=g).tolist()
        target = torch.randint(10, vocab, (max(1, s),), generator=g).tolist()
        if kind == "causal":
            out.append({"input_ids": prompt + target, "labels": [IGNORE_INDEX] * p + target})
        else:
            out.append({"input_ids": prompt, "labels": target})
    return out


def build_model(shape: str, tiny: bool, device: torch.device, attention: str = "sdpa"):
    import peft
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    kind, values = SHAPES[shape]
    values = {**values, **(TINY[shape] if tiny else {})}
    torch.manual_seed(0)
    if kind == "causal":
        model = LlamaForCausalLM(LlamaConfig(**values, attn_implementation=attention))
    else:
        model = T5ForConditionalGeneration(T5Config(**values, decoder_start_token_id=0, pad_token_id=0))
    task = peft.TaskType.CAUSAL_LM if kind == "causal" else peft.TaskType.SEQ_2_SEQ_LM
    lora = peft.LoraConfig(task_type=task, r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")
    n_params = sum(p.numel() for p in model.parameters())
    return peft.get_peft_model(model, lora).to(device), kind, n_params


# --------------------------------------------------------------------------------------------- sides
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_steep(
    model,
    kind: str,
    examples: list[dict],
    batch: int,
    steps: int,
    device: torch.device,
    pack_width: int | None = None,
) -> tuple:
    """steep's step (ray_jobs/train.py): grouped batches, label-only loss, bf16 autocast, fused AdamW.

    pack_width: `training.packing: true`, each step's examples packed into rows of this many tokens.
    """
    from steep.models import example_tokens
    from steep.ray_jobs import batches, losses

    lengths = [example_tokens(e, kind) for e in examples]
    step_module = losses.loss_module(model, kind, "lora")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=device.type == "cuda")
    plan = [b for epoch in range(1000) for b in batches.plan_batches(lengths, batch, seed=0, epoch=epoch)]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def step(ids: list[int]) -> None:
        tensors = batches.make_batch(examples, ids, lengths, 0, kind, pack_width)
        tensors = {k: v.to(device, non_blocking=True) for k, v in tensors.items()}
        with autocast:
            loss = step_module(**tensors)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return _timed(step, plan, lengths, steps, device)


def run_hf_trainer(
    model, kind: str, examples: list[dict], batch: int, steps: int, device: torch.device
) -> tuple:
    """The baseline: Trainer(bf16=True) + PEFT, each batch padded to its longest example, the model's loss."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from steep.models import example_tokens

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.tokens: list[int] = []

        def on_step_begin(self, args, state, control, **kwargs):
            _sync(device)
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            _sync(device)
            self.times.append(time.perf_counter() - self._t)

    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        from steep.ray_jobs.batches import (
            collate as pad_to_longest,  # what DataCollatorForSeq2Seq(padding=True) does
        )

        timer.tokens.append(sum(example_tokens(r, kind) for r in rows))
        return pad_to_longest(rows, 0, kind)

    timer = Timer()
    args = TrainingArguments(
        output_dir=str(REPO / ".steep" / "bench-hf"), per_device_train_batch_size=batch, max_steps=steps,
        learning_rate=1e-4, bf16=True, use_cpu=device.type == "cpu", logging_strategy="no",
        save_strategy="no", report_to="none", dataloader_num_workers=0, remove_unused_columns=False,
        disable_tqdm=True, seed=0,
    )  # fmt: skip
    Trainer(model=model, args=args, train_dataset=examples, data_collator=collate, callbacks=[timer]).train()
    return _summarize(timer.times, timer.tokens, device)


def _timed(step, batches: list[list[int]], lengths: list[int], steps: int, device: torch.device) -> tuple:
    times, tokens = [], []
    for ids in batches[:steps]:
        _sync(device)
        t = time.perf_counter()
        step(ids)
        _sync(device)
        times.append(time.perf_counter() - t)
        tokens.append(sum(lengths[i] for i in ids))
    return _summarize(times, tokens, device)


def _summarize(times: list[float], tokens: list[int], device: torch.device) -> tuple[float, float, float]:
    """Drop the first steps (kernel selection, allocator warm-up) on both sides alike."""
    skip = min(3, max(0, len(times) - 1))
    t, n = sum(times[skip:]), sum(tokens[skip : len(times)])
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    return n / t, 1000 * t / max(1, len(times) - skip), peak


def run_ray(shape: str, tiny: bool, examples: list[dict], batch: int, steps: int) -> tuple:
    """steep's step inside a one-worker Ray Train TorchTrainer (what `steep train` runs)."""
    import ray.train
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def loop(config: dict) -> None:
        device = ray.train.torch.get_device()
        model, kind, _ = build_model(shape, tiny, device)
        ray.train.report(
            dict(
                zip(("tps", "ms", "gib"), run_steep(model, kind, examples, batch, steps, device), strict=True)
            )
        )

    use_gpu = torch.cuda.is_available()
    result = TorchTrainer(
        loop, scaling_config=ScalingConfig(num_workers=1, use_gpu=use_gpu),
        run_config=RunConfig(storage_path=str(REPO / ".steep" / "bench-ray")),
    ).fit()  # fmt: skip
    return result.metrics["tps"], result.metrics["ms"], result.metrics["gib"]


# --------------------------------------------------------------------------------------------- main
def peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument(
        "--steps", type=int, default=30, help="timed steps per side (the first 3 are warm-up)"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--long", type=int, default=2048, help="prompt tokens of the long-sequence case")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: a smoke run of the code")
    parser.add_argument("--ray", action=argparse.BooleanOptionalAction, default=None, help="default: on GPU")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak, if not known")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    opts = parser.parse_args()
    from steep import hardware

    device = torch.device(opts.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else hardware.cpu_name()
    peak = peak_tflops(name, opts.peak_tflops) if device.type == "cuda" else None
    n_examples = opts.batch * (opts.steps + 4)
    legal, source = legal_lengths(n_examples, 384, 64, seed=0)
    workloads = {"legal": legal, "long": [(opts.long, 128)] * n_examples}

    results: list[Result] = []
    for shape in opts.shapes.split(","):
        for workload, lengths in workloads.items():
            kind = SHAPES[shape][0]
            vocab = (TINY[shape] if opts.tiny else SHAPES[shape][1])["vocab_size"]
            examples = make_examples(lengths, kind, vocab, seed=1)
            sides = [("steep", run_steep, "sdpa"), ("HF Trainer+PEFT", run_hf_trainer, "sdpa")]
            # packing: rows as wide as the longest example; flex_attention skips cross-example blocks
            if kind == "causal":
                packed = functools.partial(run_steep, pack_width=max(p + s for p, s in lengths))
                sides[1:1] = [("steep packing=true", packed, "sdpa")] + (
                    [("steep packed+flex", packed, "flex_attention")] if device.type == "cuda" else []
                )
            for side, fn, attention in sides:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                model, kind, n_params = build_model(shape, opts.tiny, device, attention)
                tps, ms, gib = fn(model, kind, examples, opts.batch, opts.steps, device)
                mfu = 6 * n_params * tps / (peak * 1e12) if peak else None
                results.append(Result(shape, workload, side, tps, ms, gib, mfu))
                del model
            if opts.ray if opts.ray is not None else device.type == "cuda":
                tps, ms, gib = run_ray(shape, opts.tiny, examples, opts.batch, opts.steps)
                results.append(Result(shape, workload, "steep on Ray Train", tps, ms, gib, None))

    print(
        f"device {name}, bf16, LoRA r16 all-linear, batch {opts.batch}, {opts.steps} steps; lengths: {source}"
    )
    print(f"{'shape':<14}{'workload':<9}{'side':<20}{'tokens/s':>11}{'step ms':>9}{'peak GiB':>9}{'MFU':>7}")
    for r in results:
        mfu = f"{100 * r.mfu:5.1f}%" if r.mfu is not None else "     -"
        print(
            f"{r.shape:<14}{r.workload:<9}{r.side:<20}{r.tokens_per_s:11.0f}{r.step_ms:9.1f}{r.peak_gib:9.2f}{mfu:>7}"
        )
    ratios, memory = {}, {}  # steep / baseline: tokens/s, peak memory
    for shape in opts.shapes.split(","):
        for workload in workloads:
            side = {r.side: r for r in results if r.shape == shape and r.workload == workload}
            steep, hf = side["steep"], side["HF Trainer+PEFT"]
            ratios[f"{shape}/{workload}"] = steep.tokens_per_s / hf.tokens_per_s
            if hf.peak_gib:
                memory[f"{shape}/{workload}"] = steep.peak_gib / hf.peak_gib
            if "steep on Ray Train" in side:
                keep = side["steep on Ray Train"].tokens_per_s / side["steep"].tokens_per_s
                print(f"Ray Train path keeps {100 * keep:.1f}% of the bare loop ({shape}/{workload})")
    opts.out.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") + (
        "-tiny" if opts.tiny else ""
    )
    record = {
        "device": name, "date": time.strftime("%Y-%m-%d"), "lengths": source, "batch": opts.batch,
        "steps": opts.steps, "versions": _versions(), "ratios": ratios, "peak_memory_ratios": memory,
        "results": [asdict(r) for r in results],
    }  # fmt: skip
    (opts.out / f"gpu_{slug}.json").write_text(json.dumps(record, indent=2))
    if memory:
        print("peak memory steep / HF Trainer+PEFT: " + ", ".join(f"{k} {v:.2f}" for k, v in memory.items()))
    worst = min(ratios, key=ratios.get)
    each = ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
    print(f"ratio steep / HF Trainer+PEFT tokens/s: min {ratios[worst]:.2f}x ({each})")
    return 0 if all(math.isfinite(v) for v in ratios.values()) else 1


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "transformers", "peft", "ray")} | {
        "cuda": str(torch.version.cuda)
    }


if __name__ == "__main__":
    sys.exit(main())
