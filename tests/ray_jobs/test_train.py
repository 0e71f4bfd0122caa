"""The train loop in-process (ScalingConfig(num_workers=0)) on tiny models: fast, no cluster."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import pytest
import torch

from steep import hardware, models
from steep.config import SplitConfig
from steep.hardware import resolve_precision
from steep.pipeline.training import TrainingError, train
from steep.ray_jobs import batches, checkpoints, losses
from steep.ray_jobs import train as job
from steep.ray_jobs.worker_config import FAULT_ENV
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
    plan = batches.plan_batches(lengths, 8, seed=1, epoch=0)
    assert sorted(i for b in plan for i in b) == list(range(300))
    assert plan == batches.plan_batches(lengths, 8, seed=1, epoch=0)  # resumable: a pure function
    assert plan != batches.plan_batches(lengths, 8, seed=1, epoch=1)

    def padding(bs):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)

    plain = [list(range(300))[i : i + 8] for i in range(0, 300, 8)]
    assert padding(plan) < padding(plain) / 4
    assert all(len(b) >= 2 for b in batches.plan_batches(lengths[:17], 8, seed=1, epoch=0, world=2))


def test_label_only_loss_equals_the_models_own_loss(causal_dir, tmp_path):
    cfg = tiny_config(tmp_path, causal_dir)
    tok = models.load_tokenizer(causal_dir, "causal")
    enc = models.Encoder(tok, models.PromptFormat.from_config(cfg.model, "causal"))
    model = models.load_model(causal_dir, "causal")
    examples = [
        enc.example("alpha bravo charlie delta", "alpha bravo"),
        enc.example("echo golf", "echo golf hotel"),
    ]
    batch = batches.collate(examples, tok.pad_token_id, "causal")
    fast = losses.LabelOnlyCausalLoss(model)(**batch)
    reference = model(**batch).loss
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    assert isinstance(losses.loss_module(model, "causal", "lora"), losses.LabelOnlyCausalLoss)
    assert isinstance(losses.loss_module(model, "causal", "prompt_tuning"), losses.ModelLoss)


def test_packing_fills_rows_first_fit_and_keeps_every_example_once():
    lengths = [90, 10, 60, 40, 35, 30, 120, 5]
    rows = batches.pack_rows(lengths, list(range(8)), width=100)
    assert sorted(i for row in rows for i in row) == list(range(8))
    assert all(sum(lengths[i] for i in row) <= 100 for row in rows if len(row) > 1)
    assert [120] in [[lengths[i] for i in row] for row in rows]  # too long for a row: a row of its own
    assert len(rows) == 4  # 390 tokens: 120 | 90+10 | 60+40 | 35+30+5 (vs 8 padded rows)


def _packing_setup(causal_dir, tmp_path, attention: str = "sdpa"):
    cfg = tiny_config(tmp_path, causal_dir)
    tok = models.load_tokenizer(causal_dir, "causal")
    enc = models.Encoder(tok, models.PromptFormat.from_config(cfg.model, "causal"))
    base = models.load_model(causal_dir, "causal", attention=attention)
    assert base.config._attn_implementation == attention
    model = models.apply_method(base, cfg.training, "causal")
    texts = [
        ("alpha bravo charlie delta echo", "alpha bravo"),
        ("golf", "golf hotel india"),
        ("kilo lima mike november oscar papa", "kilo"),
        ("quebec romeo", "quebec romeo sierra"),
    ]
    examples = [enc.example(t, s) for t, s in texts]
    return model, examples, [len(e["input_ids"]) for e in examples], tok.pad_token_id


@pytest.mark.parametrize(
    ("loss_cls", "attention"),
    [(losses.LabelOnlyCausalLoss, "sdpa"), (losses.ModelLoss, "sdpa"), (losses.LabelOnlyCausalLoss, "eager")],
)
def test_packed_rows_give_the_padded_batchs_loss_and_gradients(causal_dir, tmp_path, loss_cls, attention):
    """No cross-contamination: attention and targets stay inside each packed example."""
    model, examples, lengths, pad = _packing_setup(causal_dir, tmp_path, attention)
    step = loss_cls(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    ids = list(range(len(examples)))

    def loss_and_grads(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        loss = step(**batch)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in trainable])

    padded = batches.make_batch(examples, ids, lengths, pad, "causal", pack_width=None)
    packed = batches.make_batch(examples, ids, lengths, pad, "causal", pack_width=2 * max(lengths))
    assert packed["input_ids"].shape[0] < len(examples) and "attention_mask" not in packed
    assert int((packed["labels"] != models.IGNORE_INDEX).sum()) == int((padded["labels"] != -100).sum())
    loss_padded, grad_padded = loss_and_grads(padded)
    loss_packed, grad_packed = loss_and_grads(packed)
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_packed, grad_padded, rtol=1e-4, atol=1e-6)

    # the check can fail: the same rows under one causal mask per row mix the examples (10x the tolerance)
    leaky = {**packed, "position_ids": None, "attention_mask": torch.ones_like(packed["input_ids"])}
    with torch.no_grad():
        assert abs(step(**leaky).item() - loss_padded.item()) > 1e-4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_packed_rows_with_flex_attention_match_the_padded_batch(causal_dir, tmp_path):
    """flex_attention is the variable-length path on GPU: packed examples must not see each other there."""
    model, examples, lengths, pad = _packing_setup(causal_dir, tmp_path, "flex_attention")
    step = losses.LabelOnlyCausalLoss(model.to("cuda"))
    ids = list(range(len(examples)))

    def loss(width: int | None) -> torch.Tensor:
        batch = batches.make_batch(examples, ids, lengths, pad, "causal", pack_width=width)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            return step(**{k: v.to("cuda") for k, v in batch.items()})

    torch.testing.assert_close(loss(2 * max(lengths)), loss(None), rtol=2e-2, atol=0)


def test_flash_attention_without_its_package_is_refused_before_a_run(causal_dir, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real(name, *a)
    )
    cfg = tiny_config(tmp_path / "home", causal_dir, attention="flash_attention_2")
    with pytest.raises(TrainingError, match="needs the flash-attn package"):
        train(cfg, toy_splits(cfg))


def test_packing_is_refused_where_it_cannot_work(seq2seq_dir, tmp_path):
    with pytest.raises(ValueError, match="packing cannot be combined with method=prompt_tuning"):
        tiny_config(tmp_path, seq2seq_dir, packing=True, method="prompt_tuning")
    cfg = tiny_config(tmp_path / "home", seq2seq_dir, packing=True)
    with pytest.raises(TrainingError, match="packing needs a causal"):
        train(cfg, toy_splits(cfg))


# --------------------------------------------------------------------------------------------- train()
def test_causal_full_training_learns_checkpoints_and_logs_a_working_model(causal_dir, tmp_path):
    cfg = tiny_config(tmp_path / "home", causal_dir, method="full", epochs=3)
    splits = toy_splits(cfg, rows=96)
    result = train(cfg, splits)

    losses = [h["loss"] for h in result.history]
    assert len(losses) == result.metrics["steps"] == 3 * len(result.history) / 3
    assert _mean(losses[-5:]) < _mean(losses[:5]) - 0.2  # it learns the toy task
    checkpoint = Path(result.checkpoint_path)
    state = json.loads((checkpoint / checkpoints.STATE_FILE).read_text())
    assert state["final"] and state["step"] == len(losses)
    assert {
        checkpoints.TRAINABLE_FILE,
        checkpoints.OPTIMIZER_FILE,
        checkpoints.SCHEDULER_FILE,
        checkpoints.MODEL_DIR,
    } <= {p.name for p in checkpoint.iterdir()}
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


@pytest.mark.parametrize(("method", "packing"), [("lora", False), ("prompt_tuning", False), ("lora", True)])
def test_adapter_methods_train_and_load(causal_dir, tmp_path, method, packing):
    cfg = tiny_config(
        tmp_path / "home", causal_dir, method=method, epochs=2, learning_rate=1e-2, packing=packing
    )
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


def test_resume_after_a_crash_continues_the_same_run(causal_dir, tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path / "home", causal_dir, epochs=2, checkpoint_every_steps=3)
    cfg.data.split = SplitConfig(train=0.8, validation=0.05, test=0.15)  # 80 training rows: 10 steps an epoch
    splits = toy_splits(cfg, rows=96)
    with pytest.raises(RuntimeError, match="injected"):
        monkeypatch.setenv(FAULT_ENV, "7")  # the drill: in-process there is no Ray retry, the driver "dies"
        train(cfg, splits)
    client = mlflow.MlflowClient()
    failed = client.search_runs([client.get_experiment_by_name(cfg.project.name).experiment_id])[0]
    assert failed.info.status == "FAILED"

    result = train(cfg, splits, resume=True)
    assert result.run_id == failed.info.run_id
    assert result.resumed_from_step == 6  # the last checkpoint before step 7
    assert result.history[0]["step"] == 7 and result.metrics["steps"] == 20
    assert client.get_run(result.run_id).info.status == "FINISHED"


@pytest.mark.parametrize(
    ("asked", "native", "trained"),
    [("fp32", True, "fp32"), ("bf16", False, "bf16"), ("auto", True, "bf16"), ("auto", False, "fp32")],
)
def test_the_loop_trains_at_the_precision_asked_on_any_cpu(
    causal_dir, tmp_path, monkeypatch, capsys, asked, native, trained
):
    """Both precision paths run on any machine: forced, or `auto` with the CPU's bf16 flag set either way."""
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native)
    entered = []
    real_autocast = torch.autocast

    def autocast(device_type, dtype=None, enabled=True):
        entered.append(enabled)
        return real_autocast(device_type, dtype=dtype, enabled=enabled)

    monkeypatch.setattr(torch, "autocast", autocast)
    cfg = tiny_config(tmp_path / "home", causal_dir, epochs=1, precision=asked)
    result = train(cfg, toy_splits(cfg, rows=32))
    assert entered == [trained == "bf16"]  # the loop's one autocast context, on or off
    run = mlflow.MlflowClient().get_run(result.run_id)
    assert run.data.tags["steep.precision"] == trained
    assert all(math.isfinite(h["loss"]) for h in result.history)
    out = capsys.readouterr().out
    steps = int(result.metrics["steps"])
    assert f"training: {steps} steps in {trained} on " in out
    assert "(timed on this machine before the first step)" in out
    assert run.data.metrics["estimated_train_s"] > 0


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

    monkeypatch.setattr(losses.LabelOnlyCausalLoss, "forward", boom)
    cfg = tiny_config(tmp_path / "home", causal_dir)
    with pytest.raises(TrainingError, match=r"Lower training\.batch_size"):
        train(cfg, toy_splits(cfg))


def test_bf16_autocast_keeps_the_loss_and_its_gradients_close_to_fp32(causal_dir, tmp_path):
    cfg = tiny_config(tmp_path, causal_dir)
    tok = models.load_tokenizer(causal_dir, "causal")
    enc = models.Encoder(tok, models.PromptFormat.from_config(cfg.model, "causal"))
    model = models.apply_method(models.load_model(causal_dir, "causal"), cfg.training, "causal")
    examples = [enc.example("alpha bravo charlie delta", "alpha bravo"), enc.example("golf", "golf hotel")]
    batch = batches.collate(examples, tok.pad_token_id, "causal")
    step = losses.LabelOnlyCausalLoss(model)
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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_step_matches_fp32_and_resolves_to_bf16(causal_dir, tmp_path):
    cuda = torch.device("cuda")
    assert resolve_precision("auto", cuda) == "bf16"
    cfg = tiny_config(tmp_path, causal_dir)
    tok = models.load_tokenizer(causal_dir, "causal")
    enc = models.Encoder(tok, models.PromptFormat.from_config(cfg.model, "causal"))
    model = models.apply_method(models.load_model(causal_dir, "causal"), cfg.training, "causal").to(cuda)
    batch = batches.collate([enc.example("alpha bravo charlie", "alpha")], tok.pad_token_id, "causal")
    batch = {k: v.to(cuda) for k, v in batch.items()}
    step = losses.LabelOnlyCausalLoss(model)
    reference = step(**batch).detach()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fast = step(**batch).detach()
    torch.testing.assert_close(fast, reference, rtol=2e-2, atol=0)


@pytest.mark.parametrize("lag", [True, False])
def test_step_reports_are_one_step_late_on_gpu_and_none_is_lost(lag):
    import queue

    sink: queue.Queue = queue.Queue()
    reports = job.StepReports(sink, lag=lag)
    reports.add({"step": 1}, torch.tensor(2.5))
    assert sink.qsize() == (0 if lag else 1)  # on GPU step 1's loss is read while step 2 runs
    reports.add({"step": 2}, torch.tensor(1.5))
    assert reports.flush() == 1.5 and reports.flush() == 1.5
    sent = [sink.get_nowait() for _ in range(sink.qsize())]
    assert sent == [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 1.5}]
