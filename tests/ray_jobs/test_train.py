"""The train loop in-process (ScalingConfig(num_workers=0)) on tiny models: fast, no cluster."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch

from ray_jobs import train as job
from steep import models
from steep.training import TrainingError, train
from tests.conftest_train import tiny_config, toy_splits


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


# --------------------------------------------------------------------------------------------- pieces
def test_length_grouped_plan_covers_everything_once_with_less_padding():
    lengths = [(i * 37) % 200 + 5 for i in range(300)]
    batches = job.plan_batches(lengths, 8, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(300))
    assert batches == job.plan_batches(lengths, 8, seed=1, epoch=0)  # resumable: a pure function
    assert batches != job.plan_batches(lengths, 8, seed=1, epoch=1)

    def padding(bs):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)

    plain = [list(range(300))[i : i + 8] for i in range(0, 300, 8)]
    assert padding(batches) < padding(plain) / 4
    assert all(len(b) >= 2 for b in job.plan_batches(lengths[:17], 8, seed=1, epoch=0, world=2))


def test_label_only_loss_equals_the_models_own_loss(causal_dir, tmp_path):
    cfg = tiny_config(tmp_path, causal_dir)
    tok = models.load_tokenizer(causal_dir, "causal")
    enc = models.Encoder(tok, models.PromptFormat.from_config(cfg.model, "causal"))
    model = models.load_model(causal_dir, "causal")
    examples = [
        enc.example("alpha bravo charlie delta", "alpha bravo"),
        enc.example("echo golf", "echo golf hotel"),
    ]
    batch = job.collate(examples, tok.pad_token_id, "causal")
    fast = job.LabelOnlyCausalLoss(model)(**batch)
    reference = model(**batch).loss
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    assert isinstance(job.loss_module(model, "causal", "lora"), job.LabelOnlyCausalLoss)
    assert isinstance(job.loss_module(model, "causal", "prompt_tuning"), job.ModelLoss)


# --------------------------------------------------------------------------------------------- train()
def test_causal_full_training_learns_checkpoints_and_logs_a_working_model(causal_dir, tmp_path):
    cfg = tiny_config(tmp_path / "home", causal_dir, method="full", epochs=3)
    splits = toy_splits(cfg, rows=96)
    result = train(cfg, splits)

    losses = [h["loss"] for h in result.history]
    assert len(losses) == result.metrics["steps"] == 3 * len(result.history) / 3
    assert _mean(losses[-5:]) < _mean(losses[:5]) - 0.2  # it learns the toy task
    checkpoint = Path(result.checkpoint_path)
    state = json.loads((checkpoint / job.STATE_FILE).read_text())
    assert state["final"] and state["step"] == len(losses)
    assert {job.TRAINABLE_FILE, job.OPTIMIZER_FILE, job.SCHEDULER_FILE, job.MODEL_DIR} <= {
        p.name for p in checkpoint.iterdir()
    }
    epochs = sorted(p.name for p in (checkpoint.parent / "checkpoints").iterdir())
    assert len(epochs) == 3  # one per epoch, the last one final

    run = mlflow.MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["training.method"] == "full"
    assert run.data.params["data.digest.train"] == splits.digests["train"]
    assert run.data.tags["system.torch"] == torch.__version__
    history = mlflow.MlflowClient().get_metric_history(result.run_id, "loss")
    assert len(history) == len(losses)
    for key in ("lr", "tokens_per_s"):
        assert mlflow.MlflowClient().get_metric_history(result.run_id, key)
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id, "plots")]
    assert "plots/loss_curve.png" in artifacts

    model = mlflow.pyfunc.load_model(result.model_uri)
    out = model.predict(["alpha bravo charlie delta", "echo golf hotel"], params={"max_new_tokens": 3})
    assert len(out) == 2 and all(isinstance(s, str) and len(s.split()) <= 3 for s in out)


@pytest.mark.parametrize("method", ["lora", "prompt_tuning"])
def test_adapter_methods_train_and_load(causal_dir, tmp_path, method):
    cfg = tiny_config(tmp_path / "home", causal_dir, method=method, epochs=2, learning_rate=1e-2)
    result = train(cfg, toy_splits(cfg, rows=64))
    losses = [h["loss"] for h in result.history]
    assert _mean(losses[-3:]) < _mean(losses[:3])
    assert (Path(result.model_dir) / "adapter_config.json").is_file()
    summarizer = models.load_for_inference(result.base_model_dir, result.model_dir)
    assert len(summarizer.summarize(["alpha bravo"], max_new_tokens=2)) == 1


def test_seq2seq_trains(seq2seq_dir, tmp_path):
    cfg = tiny_config(tmp_path / "home", seq2seq_dir, method="full", epochs=3)
    result = train(cfg, toy_splits(cfg, rows=96))
    losses = [h["loss"] for h in result.history]
    assert _mean(losses[-5:]) < _mean(losses[:5]) - 0.2
    out = mlflow.pyfunc.load_model(result.model_uri).predict(["alpha bravo"], params={"max_new_tokens": 3})
    assert len(out) == 1


def test_merged_weights_option_logs_one_model_folder(causal_dir, tmp_path):
    cfg = tiny_config(tmp_path / "home", causal_dir, epochs=1, merge_weights=True)
    result = train(cfg, toy_splits(cfg, rows=32))
    local = mlflow.artifacts.download_artifacts(result.model_uri)
    assert (Path(local) / "artifacts" / "model" / "config.json").is_file()
    assert not (Path(local) / "artifacts" / "adapter").exists()
    assert (
        len(mlflow.pyfunc.load_model(result.model_uri).predict(["alpha"], params={"max_new_tokens": 2})) == 1
    )


def test_resume_after_a_crash_continues_the_same_run(causal_dir, tmp_path):
    cfg = tiny_config(tmp_path / "home", causal_dir, epochs=2, checkpoint_every_steps=3)
    splits = toy_splits(cfg, rows=96)
    with pytest.raises(RuntimeError, match="injected"):
        train(cfg, splits, fail_at_step=7)  # in-process there is no Ray retry: the driver "dies"
    client = mlflow.MlflowClient()
    failed = client.search_runs([client.get_experiment_by_name(cfg.project.name).experiment_id])[0]
    assert failed.info.status == "FAILED"

    result = train(cfg, splits, resume=True)
    assert result.run_id == failed.info.run_id
    assert result.resumed_from_step == 6  # the last checkpoint before step 7
    assert result.history[0]["step"] == 7 and result.metrics["steps"] == 20
    assert client.get_run(result.run_id).info.status == "FINISHED"


# --------------------------------------------------------------------------------------------- bad input
def test_bad_lora_target_fails_before_anything_is_recorded(causal_dir, tmp_path):
    cfg = tiny_config(tmp_path / "home", causal_dir)
    cfg.training.lora.target_modules = ["q_proj", "attention"]
    with pytest.raises(models.ModelError, match=r"attention.*k_proj"):
        train(cfg, toy_splits(cfg))
    assert not (tmp_path / "home" / "mlflow.db").exists()


def test_dataset_smaller_than_a_batch_is_refused(causal_dir, tmp_path):
    cfg = tiny_config(tmp_path / "home", causal_dir, batch_size=64)
    with pytest.raises(TrainingError, match=r"training\.batch_size"):
        train(cfg, toy_splits(cfg, rows=40))
    assert not (tmp_path / "home" / "mlflow.db").exists()


def test_resume_without_a_run_says_so(causal_dir, tmp_path):
    cfg = tiny_config(tmp_path / "home", causal_dir)
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(cfg, toy_splits(cfg), resume=True)


def test_out_of_memory_names_the_setting(causal_dir, tmp_path, monkeypatch):
    def boom(self, **batch):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(job.LabelOnlyCausalLoss, "forward", boom)
    cfg = tiny_config(tmp_path / "home", causal_dir)
    with pytest.raises(TrainingError, match=r"Lower training\.batch_size"):
        train(cfg, toy_splits(cfg))


def test_bf16_autocast_keeps_the_loss_and_its_gradients_close_to_fp32(causal_dir, tmp_path):
    cfg = tiny_config(tmp_path, causal_dir)
    tok = models.load_tokenizer(causal_dir, "causal")
    enc = models.Encoder(tok, models.PromptFormat.from_config(cfg.model, "causal"))
    model = models.apply_method(models.load_model(causal_dir, "causal"), cfg.training, "causal")
    examples = [enc.example("alpha bravo charlie delta", "alpha bravo"), enc.example("golf", "golf hotel")]
    batch = job.collate(examples, tok.pad_token_id, "causal")
    step = job.LabelOnlyCausalLoss(model)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(autocast: bool) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = step(**batch)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in trainable])

    loss32, grad32 = loss_and_grads(False)
    loss16, grad16 = loss_and_grads(True)
    assert loss16.dtype == torch.float32 and all(p.dtype == torch.float32 for p in trainable)  # fp32 masters
    torch.testing.assert_close(loss16, loss32, rtol=2e-2, atol=0)
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.99


def test_precision_auto_follows_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(job, "cpu_has_native_bf16", lambda: True)
    assert job.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(job, "cpu_has_native_bf16", lambda: False)
    assert job.resolve_precision("auto", cpu) == "fp32"
    assert job.resolve_precision("bf16", cpu) == "bf16" and job.resolve_precision("fp32", cpu) == "fp32"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_step_matches_fp32_and_resolves_to_bf16(causal_dir, tmp_path):
    cuda = torch.device("cuda")
    assert job.resolve_precision("auto", cuda) == "bf16"
    cfg = tiny_config(tmp_path, causal_dir)
    tok = models.load_tokenizer(causal_dir, "causal")
    enc = models.Encoder(tok, models.PromptFormat.from_config(cfg.model, "causal"))
    model = models.apply_method(models.load_model(causal_dir, "causal"), cfg.training, "causal").to(cuda)
    batch = job.collate([enc.example("alpha bravo charlie", "alpha")], tok.pad_token_id, "causal")
    batch = {k: v.to(cuda) for k, v in batch.items()}
    step = job.LabelOnlyCausalLoss(model)
    reference = step(**batch).detach()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fast = step(**batch).detach()
    torch.testing.assert_close(fast, reference, rtol=2e-2, atol=0)
