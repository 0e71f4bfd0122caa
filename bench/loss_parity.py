"""Loss-curve parity: steep's fast training path vs Hugging Face Trainer + PEFT on the real legal set.

Both sides train the same base model with the same LoRA settings, learning rate, schedule shape (linear,
5% warm-up) and precision (bf16 autocast where the CPU or GPU has it, else fp32) for the same number of
steps, on the *same batches in the same order* (steep's length-grouped plan, handed to the Trainer one batch
per item with a sequential sampler), so every step sees equal tokens and any gap is numerics. steep runs its
real path, `steep.pipeline.training.train` (Ray Train, label-only loss, its own loop).

Tolerance, stated before measuring: the 20-step moving averages of the two loss curves stay within 3% of
each other at every step, and the mean of the last 20 steps within 2%. Two known, harmless differences:
the Trainer's warm-up starts at lr 0 where steep's starts at lr/warm-up steps, and bf16 rounding differs
with the kernels each side's loss path runs.

    python bench/loss_parity.py [--steps 200] [--batch 4] [--set key=value ...]

Writes bench/results/loss_parity_<device>.json and .png (both curves); prints the comparison last and exits 1
when a tolerance is exceeded.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.train_throughput import bench_home, hf_peft_model, legal_config, mlflow_tag  # noqa: E402
from steep.hardware import cpu_name  # noqa: E402

WINDOW = 20
MAX_GAP = 0.03  # moving averages, at every step
MAX_FINAL_GAP = 0.02  # mean of the last WINDOW steps


def same_batches(cfg, splits, steps: int) -> list[list[dict]]:
    """The batches steep's loop will train on, in its order: the plan of each epoch, cut at `steps`."""
    from steep.models import example_tokens
    from steep.pipeline.training import prepare
    from steep.ray_jobs.batches import plan_batches

    prepared = prepare(cfg, splits)
    examples = prepared.examples
    lengths = [example_tokens(e, prepared.kind) for e in examples]
    batches: list[list[dict]] = []
    for epoch in range(cfg.training.epochs):
        plan = plan_batches(lengths, cfg.training.batch_size, cfg.project.seed, epoch)
        batches.extend([examples[i] for i in ids] for ids in plan)
    return batches[:steps]


def run_hf_trainer(cfg, batches: list[list[dict]], bf16: bool) -> list[float]:
    """The Trainer as users write it, fed steep's batches one per item, logging the loss of every step."""
    from transformers import (
        DataCollatorForSeq2Seq,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from steep import models

    tokenizer = models.load_tokenizer(models.resolve_model(cfg), "causal")
    tokenizer.padding_side = "right"
    pad = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=models.IGNORE_INDEX)
    losses: list[float] = []

    class Losses(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    t = cfg.training
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=1, max_steps=len(batches),
            learning_rate=t.learning_rate, warmup_steps=int(t.warmup_ratio * len(batches)),
            weight_decay=t.weight_decay, lr_scheduler_type="linear", max_grad_norm=1.0, logging_steps=1,
            save_strategy="no", report_to="none", dataloader_num_workers=0, remove_unused_columns=False,
            seed=cfg.project.seed, disable_tqdm=True, bf16=bf16, train_sampling_strategy="sequential",
            use_cpu=not cfg.training.use_gpu,
        )  # fmt: skip
        trainer = Trainer(
            model=hf_peft_model(cfg), args=args, train_dataset=batches, callbacks=[Losses()],
            data_collator=lambda items: pad(items[0]),
        )  # fmt: skip
        trainer.remove_callback(PrinterCallback)  # a dict per step on stdout; the curve is the output
        trainer.train()
    return losses


def moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def compare(steep: list[float], hf: list[float]) -> dict[str, float]:
    """Relative gaps between the curves: smoothed at each step (from the first full window) and at the end."""
    n = min(len(steep), len(hf))
    w = min(WINDOW, n)
    a, b = moving_average(steep[:n], w), moving_average(hf[:n], w)
    gaps = [abs(x - y) / abs(y) for x, y in zip(a[w - 1 :], b[w - 1 :], strict=True)]
    final = abs(a[-1] - b[-1]) / abs(b[-1])
    raw = [abs(x - y) for x, y in zip(steep[:n], hf[:n], strict=True)]
    return {
        "steps": n,
        "max_smoothed_gap": max(gaps),
        "final_gap": final,
        "mean_abs_step_diff": sum(raw) / n,
        "steep_first": steep[0],
        "hf_first": hf[0],
        "steep_last20": a[-1],
        "hf_last20": b[-1],
    }


def plot(steep: list[float], hf: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for values, label, color in ((hf, "HF Trainer + PEFT", "tab:blue"), (steep, "steep", "tab:red")):
        ax.plot(values, alpha=0.2, color=color)
        ax.plot(moving_average(values, WINDOW), color=color, label=f"{label} ({WINDOW}-step mean)")
    ax.set(xlabel="step (same batches on both sides)", ylabel="training loss", title="loss-curve parity")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="config override key=value")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    opts = parser.parse_args()

    from steep.data import load_dataset, split_dataset
    from steep.pipeline.training import train

    base = legal_config(bench_home(), 1, [f"training.batch_size={opts.batch}", *opts.sets])
    splits = split_dataset(load_dataset(base).frame, base.data.split, base.project.seed)
    per_epoch = len(splits.train) // opts.batch
    epochs = math.ceil(opts.steps / max(1, per_epoch)) + 1
    cfg = base.model_copy(
        update={"training": base.training.model_copy(update={"epochs": epochs, "max_steps": opts.steps})}
    )
    batches = same_batches(cfg, splits, opts.steps)
    tokens = sum(len(e["input_ids"]) for b in batches for e in b)
    print(f"{len(splits.train)} legal examples, batch {opts.batch}, {len(batches)} steps, {tokens} tokens")

    started = time.perf_counter()
    result = train(cfg, splits)
    steep_losses = [row["loss"] for row in result.history]
    precision = mlflow_tag(result.run_id, "steep.precision")
    steep_s = time.perf_counter() - started
    started = time.perf_counter()
    hf_losses = run_hf_trainer(cfg, batches, bf16=precision == "bf16")
    hf_s = time.perf_counter() - started

    gaps = compare(steep_losses, hf_losses)
    ok = gaps["max_smoothed_gap"] <= MAX_GAP and gaps["final_gap"] <= MAX_FINAL_GAP
    opts.out.mkdir(parents=True, exist_ok=True)
    if cfg.training.use_gpu:
        import torch

        name = torch.cuda.get_device_name()
    else:
        name = cpu_name()
    slug = "cpu" if not cfg.training.use_gpu else "gpu"
    record = {
        "device": name, "precision": precision, "date": time.strftime("%Y-%m-%d"), "batch": opts.batch,
        "tokens": tokens, "tolerance": {"max_smoothed_gap": MAX_GAP, "final_gap": MAX_FINAL_GAP,
                                        "window": WINDOW},
        "result": gaps, "within_tolerance": ok, "seconds": {"steep": steep_s, "hf_trainer": hf_s},
        "steep": steep_losses, "hf_trainer": hf_losses,
    }  # fmt: skip
    (opts.out / f"loss_parity_{slug}.json").write_text(json.dumps(record, indent=2))
    plot(steep_losses, hf_losses, opts.out / f"loss_parity_{slug}.png")
    print(f"steep {steep_s:.0f} s, HF Trainer {hf_s:.0f} s ({precision}); first loss "
          f"{gaps['steep_first']:.3f} vs {gaps['hf_first']:.3f}; "
          f"mean |step difference| {gaps['mean_abs_step_diff']:.3f}")  # fmt: skip
    print(
        f"parity over {gaps['steps']} steps: {WINDOW}-step means differ by at most "
        f"{100 * gaps['max_smoothed_gap']:.2f}% (tolerance {100 * MAX_GAP:.0f}%), last {WINDOW} steps "
        f"{gaps['steep_last20']:.3f} vs {gaps['hf_last20']:.3f} = {100 * gaps['final_gap']:.2f}% "
        f"(tolerance {100 * MAX_FINAL_GAP:.0f}%): {'within' if ok else 'OUTSIDE'} tolerance"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
