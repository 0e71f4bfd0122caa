"""A registry with tiny champions and real servers over it (`bentoml serve`, and `steep serve` with an API
key), for the serving tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from steep import logged_model, tracking
from steep.config import SteepConfig, dump_config
from steep.models import PromptFormat
from steep.registry import Registry, model_name
from steep.serving import process
from steep.stack.daemons import free_port
from tests.conftest_train import INSTRUCTION, tiny_causal


def tiny_serving_config(home: Path, model_dir: Path, **serving) -> SteepConfig:
    """Tiny model limits: short prompts, 4 new tokens (16 at most on request), hot swap polled each second."""
    return SteepConfig.model_validate(
        {
            "project": {"home": str(home)},
            "model": {
                "source": str(model_dir),
                "max_source_tokens": 24,
                "max_target_tokens": 6,
                "instruction": INSTRUCTION,
            },
            "serving": {
                "max_new_tokens": 4,
                "max_tokens_limit": 16,
                "max_batch_size": 8,
                "max_latency_ms": 20_000,
                "max_texts": 4,
                "max_text_chars": 200,
                "poll_interval": "1s",
                **serving,
            },
        }
    )


def register_tiny(cfg: SteepConfig, folder: Path, promote: bool = True) -> str:
    """Log a random-init tiny causal LM as steep's pyfunc, register it, optionally make it champion.

    Its heads have 16 dimensions, so `serving.engine: auto` serves it on onnxruntime, as it serves the
    default model: the server tests run on the engine users get."""
    if not (folder / "config.json").exists():
        tiny_causal(folder, heads=2)
        PromptFormat.from_config(cfg.model, "causal").save(folder)
    experiment = tracking.setup(cfg)
    with mlflow.start_run(experiment_id=experiment) as run:
        uri = logged_model.log_summarizer({"model": str(folder)}, cfg.serving.max_new_tokens)
    registry = Registry(model_name(cfg))
    version = registry.register(uri, run.info.run_id, {"steep.test": True})
    if promote:
        registry.promote(version.version, "test")
    return str(version.version)


@dataclass
class Server:
    url: str
    cfg: SteepConfig
    model_dir: Path
    log: Path


@pytest.fixture(scope="module")
def tiny_registry(tmp_path_factory) -> tuple[SteepConfig, Path]:
    root = tmp_path_factory.mktemp("serving")
    cfg = tiny_serving_config(root / "home", root / "tiny")
    register_tiny(cfg, root / "tiny")
    return cfg, root / "tiny"


def run_server(
    cfg: SteepConfig, model_dir: Path, log: Path, extra_env: dict | None = None
) -> Iterator[Server]:
    port = free_port()
    proc = process.start(cfg, "127.0.0.1", port, log_file=log, extra_env=extra_env)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            process.wait_ready(url, proc, timeout_s=150)
        except Exception:
            print(log.read_text()[-4000:] if log.exists() else "(no server log)")
            raise
        yield Server(url, cfg, model_dir, log)
    finally:
        process.stop(proc)


KEY_ENV = "STEEP_TEST_SERVING_KEY"
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def server(tiny_registry, tmp_path_factory):
    cfg, model_dir = tiny_registry
    yield from run_server(cfg, model_dir, tmp_path_factory.mktemp("server") / "server.log")


@pytest.fixture(scope="module")
def keyed_server(tiny_registry, tmp_path_factory):
    """`steep serve` (the CLI) with an API key required."""
    cfg, _ = tiny_registry
    folder = tmp_path_factory.mktemp("keyed")
    cfg = cfg.model_copy(deep=True)
    cfg.serving.api_key_env = KEY_ENV
    config = folder / "steep.yaml"
    config.write_text(dump_config(cfg))
    port = free_port()
    log = folder / "serve.log"
    env = {**os.environ, KEY_ENV: KEY}
    steep = Path(sys.executable).with_name("steep")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(steep), "serve", "--config", str(config), "--port", str(port)],
            env=env, cwd=folder, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_ready(url, proc, timeout_s=150)
    except Exception:
        print(log.read_text()[-4000:])
        process.stop(proc)
        raise
    yield url, proc, port
    process.stop(proc)
