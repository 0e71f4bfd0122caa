"""The validation loss at each epoch's end (training.validation_loss): the number `steep tune`'s early
stopping reads, and an MLflow series of every run that turns it on. In-process, on a tiny model."""

from __future__ import annotations

import mlflow
import pytest
import torch

from steep import models
from steep.pipeline.training import train
from steep.ray_jobs import batches, losses
from steep.ray_jobs import train as job
from tests.conftest_train import tiny_config, toy_splits


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_the_validation_loss_is_the_mean_over_summary_tokens_whatever_the_batching(
    causal_dir, seq2seq_dir, tmp_path, kind
):
    folder = causal_dir if kind == "causal" else seq2seq_dir
    cfg = tiny_config(tmp_path, folder)
    tok = models.load_tokenizer(folder, kind)
    encoder = models.Encoder(tok, models.PromptFormat.from_config(cfg.model, kind))
    splits = toy_splits(cfg)
    rows = splits.train.head(20)
    examples = [encoder.example(t, s) for t, s in zip(rows["text"], rows["summary"], strict=True)]
    model = models.load_model(folder, kind).eval()
    module = losses.loss_module(model, kind, "lora")

    def measured(batch_size: int) -> float:
        return losses.validation_loss(
            module, examples, pad_id=tok.pad_token_id, kind=kind, batch_size=batch_size,
            device=torch.device("cpu"),
        )  # fmt: skip

    # the reference: each example's own mean, weighted by its summary tokens
    total = tokens = 0.0
    with torch.no_grad():
        for example in examples:
            batch = batches.collate([example], tok.pad_token_id, kind)
            count = losses.label_tokens(batch["labels"], kind)
            total += float(module(**batch)) * count
            tokens += count
    reference = total / tokens
    assert measured(1) == pytest.approx(reference, rel=1e-5)
    assert measured(7) == pytest.approx(reference, rel=1e-5)
    assert measured(len(examples)) == pytest.approx(reference, rel=1e-5)


def test_a_run_with_validation_loss_logs_it_at_each_epochs_end(causal_dir, tmp_path):
    cfg = tiny_config(tmp_path / "home", causal_dir, method="full", epochs=3, validation_loss=True)
    splits = toy_splits(cfg, rows=96)
    assert len(splits.validation) > 0
    result = train(cfg, splits)

    assert [row["epoch"] for row in result.validation] == [1, 2, 3]
    steps = int(result.metrics["steps"])
    assert [row["step"] for row in result.validation] == [steps // 3, 2 * steps // 3, steps]
    losses = [row["val_loss"] for row in result.validation]
    assert losses[-1] < losses[0]  # full fine-tuning learns the toy task: held-out rows get easier too
    history = mlflow.MlflowClient().get_metric_history(result.run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(r["step"], r["val_loss"]) for r in result.validation]


def test_without_it_no_validation_pass_runs(causal_dir, tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path / "home", causal_dir, epochs=1)
    assert not cfg.training.validation_loss  # off by default: `steep run` pays nothing for it
    calls = []
    monkeypatch.setattr(job, "validation_loss", lambda *a, **k: calls.append(1) or 0.0)
    result = train(cfg, toy_splits(cfg))
    assert calls == [] and result.validation == []
    assert mlflow.MlflowClient().get_metric_history(result.run_id, "val_loss") == []


@pytest.mark.integration
def test_two_ddp_workers_measure_the_same_validation_loss_as_one_process(causal_dir, tmp_path):
    """Rank 0 measures alone while the other rank waits at the checkpoint: no collective call is made, and
    the number is the one an in-process run gets (DDP trains the same weights)."""
    losses = {}
    for workers in (0, 2):
        cfg = tiny_config(
            tmp_path / f"home{workers}", causal_dir, workers=workers, epochs=2, precision="fp32",
            validation_loss=True,
        )  # fmt: skip
        result = train(cfg, toy_splits(cfg, rows=64))
        losses[workers] = [row["val_loss"] for row in result.validation]
    assert len(losses[2]) == 2
    assert losses[2] == pytest.approx(losses[0], rel=1e-4)
