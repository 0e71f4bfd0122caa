"""Training throughput: steep's train() vs a plain Hugging Face Trainer + PEFT baseline, in the same run.

Same base model, same tokenized examples (steep's prompt format and truncation), same LoRA config, batch size,
learning rate and threads. Tokens/s counts the real (unpadded) tokens of the examples trained on, over the
time spent in optimizer steps (a callback times the baseline's steps the same way). steep's fixed start-up
(Ray, model load, MLflow, logging the model) is reported apart.

Precision: both sides are compared at the same precision, on any CPU. fp32 on both is always measured (the
Trainer as users run it by default; steep's `training.precision: auto` on a CPU without native bf16). Where
the CPU has native bf16 (AVX512-BF16/AMX), steep's `auto` trains in bf16 autocast, and the Trainer with
`bf16=True` is measured beside it. The target: steep's fp32 training at least 1.5x the Trainer's fp32.

    python bench/train_throughput.py [--examples 64] [--workers 0] [--set key=value ...]

The same steep path is also run with one Ray Train worker (workers=1: what Ray Train costs besides its
start-up) and with `training.packing: true` (what packing gives over length-grouped batches). Results go to
bench/results/train_throughput_cpu_<bf16|no-bf16>.json, one record per kind of CPU.

Prints one line per side, then the ratios last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEGAL = REPO / ".." / "shared" / "datasets" / "legal_summarization" / "legal_summarization.jsonl"


def bench_home() -> str:
    """A throw-away project.home (offline, quiet) that reuses the checkout's converted SmolLM2."""
    for key, value in {
        "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
        "TOKENIZERS_PARALLELISM": "false",
    }.items():  # fmt: skip
        os.environ.setdefault(key, value)
    home = tempfile.mkdtemp(prefix="steep-bench-")
    cache = REPO / ".steep" / "cache" / "models"
    if cache.is_dir():  # the conversion is not what is measured
        (Path(home) / "cache").mkdir(parents=True)
        (Path(home) / "cache" / "models").symlink_to(cache)
    return home


def legal_config(home: str, workers: int, sets: list[str]):
    from steep.config import load_config

    overrides = [
        f"project.home={home}",
        f"data.source={LEGAL.resolve()}",
        "data.id_column=id",
        "data.text_column=source_text",
        "data.summary_column=summary",
        "data.group_column=doc",
        "data.sha256=null",
        f"training.workers={workers}",
        "training.epochs=1",
        *sets,
    ]
    return load_config(None, overrides)


def pick_examples(cfg, examples: int):
    """The first `examples` rows of the train split (the split is seeded, so both sides get the same rows)."""
    from dataclasses import replace

    from steep.data import load_dataset, split_dataset

    splits = split_dataset(load_dataset(cfg).frame, cfg.data.split, cfg.project.seed)
    return replace(splits, train=splits.train.head(examples).reset_index(drop=True))


def run_steep(cfg, splits):
    from steep.pipeline.training import train

    return train(cfg, splits)


def run_hf_trainer(cfg, splits, threads: int, bf16: bool = False) -> tuple[float, int]:
    """The baseline a user would write: Trainer + PEFT LoRA, default collator padding, full-vocab loss.

    bf16=True is the same Trainer with its `bf16` switch (CPU autocast), for a same-precision comparison.
    """
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    from steep import models

    model_dir = models.resolve_model(cfg)
    tokenizer = models.load_tokenizer(model_dir, "causal")
    tokenizer.padding_side = "right"
    encoder = models.Encoder(tokenizer, models.PromptFormat.from_config(cfg.model, "causal"))
    examples = [
        encoder.example(t, s) for t, s in zip(splits.train["text"], splits.train["summary"], strict=True)
    ]
    tokens = sum(len(e["input_ids"]) for e in examples)
    t = cfg.training
    model = hf_peft_model(cfg)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds = 0.0
            self.steps = 0
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds += time.perf_counter() - self._start
            self.steps += 1

    timer = StepTimer()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=t.batch_size, num_train_epochs=1,
            learning_rate=t.learning_rate, warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay,
            lr_scheduler_type="linear", max_grad_norm=1.0, logging_strategy="no", save_strategy="no",
            report_to="none", use_cpu=True, dataloader_num_workers=0, remove_unused_columns=False,
            seed=cfg.project.seed, disable_tqdm=True, bf16=bf16,
        )  # fmt: skip
        trainer = Trainer(
            model=model, args=args, train_dataset=examples, callbacks=[timer],
            data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        )  # fmt: skip
        trainer.train()
    # the timer sees each step from its first micro-batch fetch to the optimizer step, like steep's loop
    return tokens / timer.seconds, timer.steps


def hf_peft_model(cfg):
    """The baseline's model: the same base weights and LoRA settings, through plain PEFT."""
    import peft

    from steep import models

    t = cfg.training
    lora = peft.LoraConfig(
        task_type=peft.TaskType.CAUSAL_LM, r=t.lora.r, lora_alpha=t.lora.alpha, lora_dropout=t.lora.dropout,
        target_modules=t.lora.target_modules,
    )  # fmt: skip
    return peft.get_peft_model(models.load_model(models.resolve_model(cfg), "causal"), lora)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=64, help="train rows used by both sides")
    parser.add_argument("--workers", type=int, default=0, help="steep's Ray workers (0: in-process)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="config override key=value")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    opts = parser.parse_args()
    import torch

    from steep import hardware, models

    threads = torch.get_num_threads()
    cfg = legal_config(bench_home(), opts.workers, opts.sets)
    splits = pick_examples(cfg, opts.examples)
    models.resolve_model(cfg)  # convert once before timing anything
    load = os.getloadavg()[0]
    device = hardware.describe(torch.device("cpu"), threads)
    print(f"model {cfg.model.source}, {len(splits.train)} examples, batch {cfg.training.batch_size}, "
          f"LoRA r{cfg.training.lora.r} {cfg.training.lora.target_modules}, {device}, "
          f"load {load:.1f}")  # fmt: skip

    result = run_steep(cfg, splits)
    precision = mlflow_tag(result.run_id, "steep.precision")
    variants = {}  # the same path with one setting changed: fp32 where auto chose bf16, Ray, packing
    if precision != "fp32":
        variants["fp32"] = with_training(cfg, precision="fp32")
    other_workers = 1 if cfg.training.workers == 0 else 0  # Ray Train's cost, measured from either side
    name = "Ray Train worker (workers=1)" if other_workers else "in-process loop (workers=0)"
    variants[name] = with_training(cfg, workers=other_workers)
    if not cfg.training.packing:
        variants["packing=true"] = with_training(cfg, packing=True)
    measured = {name: run_steep(variant, splits) for name, variant in variants.items()}
    hf_tps, hf_steps = run_hf_trainer(cfg, splits, threads)
    hf16_tps = run_hf_trainer(cfg, splits, threads, bf16=True)[0] if precision == "bf16" else None

    steep_tps, timing = result.metrics["tokens_per_s"], result.timing
    steps = f"{len(result.history)} steps in {timing['steps_s']:.1f} s"
    print(f"steep ({precision}):             {steep_tps:8.1f} tokens/s  ({steps})")
    print(f"steep fixed start-up {timing['startup_s']:.1f} s before the first step, "
          f"{timing['after_s']:.1f} s after the last (checkpoint, MLflow model)")  # fmt: skip
    for name, other in measured.items():
        tps = other.metrics["tokens_per_s"]
        print(f"  steep, {name}: {tps:8.1f} tokens/s ({tps / steep_tps:.3f} of steep's), start-up "
              f"{other.timing['startup_s']:.1f} s + {other.timing['after_s']:.1f} s")  # fmt: skip
    print(f"HF Trainer (default fp32): {hf_tps:8.1f} tokens/s  ({hf_steps} steps)")
    if hf16_tps:
        print(f"HF Trainer (bf16=True):    {hf16_tps:8.1f} tokens/s")
    steep_fp32 = measured["fp32"].metrics["tokens_per_s"] if "fp32" in measured else steep_tps
    ratios = {"fp32": steep_fp32 / hf_tps, "bf16": steep_tps / hf16_tps if hf16_tps else None}
    print(f"load average now {os.getloadavg()[0]:.1f}")
    record = {
        "device": hardware.cpu_name(), "native_bf16": hardware.cpu_has_native_bf16(), "threads": threads,
        "precision": precision, "date": time.strftime("%Y-%m-%d"), "load_before": round(load, 2),
        "examples": len(splits.train), "batch": cfg.training.batch_size, "workers": cfg.training.workers,
        "steep": {"tokens_per_s": steep_tps, **timing},
        "variants": {k: {"tokens_per_s": r.metrics["tokens_per_s"], **r.timing} for k, r in measured.items()},
        "hf_trainer_fp32": hf_tps, "hf_trainer_bf16": hf16_tps,
        "ratio_fp32": ratios["fp32"], "ratio_bf16": ratios["bf16"],
    }  # fmt: skip
    kind = "bf16" if hardware.cpu_has_native_bf16() else "no-bf16"
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / f"train_throughput_cpu_{kind}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"ratio steep / HF Trainer+PEFT, fp32 on both: {ratios['fp32']:.2f}x (target >= 1.5x)")
    if ratios["bf16"]:
        print(f"ratio steep / HF Trainer+PEFT, bf16 on both: {ratios['bf16']:.2f}x")


def with_training(cfg, **changes):
    return cfg.model_copy(update={"training": cfg.training.model_copy(update=changes)})


def mlflow_tag(run_id: str, key: str) -> str:
    import mlflow

    return mlflow.MlflowClient().get_run(run_id).data.tags.get(key, "fp32")


if __name__ == "__main__":
    sys.exit(main())
