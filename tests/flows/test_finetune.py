"""The `steep run` flow end to end on a tiny model: the champion moves only when everything says so.

A real Prefect (ephemeral) API, a real MLflow sqlite registry, real in-process training and evaluation.
"""

from __future__ import annotations

import os
import threading
import time

import mlflow
import pytest

from steep.config import SteepConfig
from steep.pipeline.prepare import prepare_splits
from steep.registry import CHALLENGER, CHAMPION, Registry, model_name
from steep.scoring.scores import Role
from tests.conftest_train import tiny_causal, toy_frame

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("flow")
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    (home / "prefect").mkdir()
    model = tiny_causal(home / "tiny")
    data = home / "toy.jsonl"
    toy_frame(80).to_json(data, orient="records", lines=True)
    return {
        "project": {"home": str(home / "steep")},
        "data": {"source": str(data), "sha256": None, "id_column": "id", "text_column": "text",
                 "summary_column": "summary", "group_column": "group"},
        "validation": {"summary_min_words": 1, "min_rows": 10},
        "model": {"source": str(model), "max_source_tokens": 24, "max_target_tokens": 6,
                  "instruction": "summarize the clause ."},
        "training": {"workers": 0, "batch_size": 8, "learning_rate": 3e-3, "epochs": 1, "warmup_ratio": 0.0},
        "evaluation": {"approval_timeout": "60s"},
        "serving": {"build_on_promote": False, "max_new_tokens": 4},
    }  # fmt: skip


def make_config(base: dict, **sections) -> SteepConfig:
    data = {k: dict(v) for k, v in base.items()}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return SteepConfig.model_validate(data)


def run(cfg: SteepConfig):
    from steep.flows.finetune import finetune_flow

    return finetune_flow(cfg)


@pytest.fixture(scope="module")
def registry(base) -> Registry:
    """A registry with a champion: the first run's version, promoted by hand (random weights beat nothing)."""
    cfg = make_config(base)
    first = run(cfg)
    assert first.version is not None and not first.promoted  # ties with the base model are refused
    reg = Registry(model_name(cfg))
    reg.promote(first.version, "test setup")
    return reg


def champion_of(registry: Registry) -> str:
    return str(registry.alias(CHAMPION).version)


def test_a_passing_gate_moves_the_champion_and_packages_it(base, registry):
    from steep.serving.process import bentoml_home

    before = champion_of(registry)
    cfg = make_config(base, serving={"build_on_promote": True})
    outcome = run(cfg)  # ties with the champion pass min_improvement 0
    assert outcome.promoted and outcome.decision.promote
    assert champion_of(registry) == outcome.version != before
    version = registry.version(outcome.version)
    assert version.tags["steep.gate_passed"] == "true" and "steep.data_digest" in version.tags
    assert outcome.package.bento == version.tags["steep.bento"] == f"steep-summarizer:v{outcome.version}"
    bento = bentoml_home(cfg) / "bentos" / "steep-summarizer" / f"v{outcome.version}"
    assert (bento / "bento.yaml").is_file()
    assert {"lead-1", "challenger", "base"} <= {e.name for e in outcome.evaluations}
    assert any(e.name.startswith("champion v") for e in outcome.evaluations)
    names = {e.role: e.name for e in outcome.evaluations}
    assert names == {Role.BASELINE: "lead-1", Role.CHALLENGER: "challenger", Role.BASE: "base",
                     Role.CHAMPION: f"champion v{before}"}  # fmt: skip
    assert {"steep.eval.lead-1", "steep.eval.challenger", "steep.eval.base", "steep.eval.champion"} <= set(
        version.tags
    )
    prepared = prepare_splits(cfg)  # the data and splits the version was trained and tested on
    assert version.tags["steep.data_digest"] == prepared.dataset.digest
    for name, digest in prepared.splits.digests.items():
        assert version.tags[f"steep.split_digest.{name}"] == digest
    metrics = mlflow.MlflowClient().get_run(outcome.run_id).data.metrics
    assert {f"eval_{m}_rougeL" for m in ("lead1", "challenger", "base", "champion")} <= set(metrics)


def test_a_failed_build_keeps_the_promotion_and_says_how_to_retry(base, registry, tmp_path, monkeypatch):
    """Packaging comes after promotion: a real `bentoml build` failure (its store is a file) is a warning."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("BENTOML_HOME", str(blocked))
    outcome = run(make_config(base, serving={"build_on_promote": True}))
    assert outcome.promoted and champion_of(registry) == outcome.version
    package = outcome.package
    assert package.bento is None and "bentoml build failed" in package.error
    assert package.retry == f"steep package --version {outcome.version}"
    tags = registry.version(outcome.version).tags
    assert "steep.bento" not in tags and "bentoml build failed" in tags["steep.bento_error"]


def test_failed_validation_moves_nothing(base, registry):
    from steep.flows.finetune import ValidationFailed

    before, count = champion_of(registry), len(registry.versions())
    with pytest.raises(ValidationFailed, match="nothing trained"):
        run(make_config(base, validation={"min_rows": 10_000}))
    assert champion_of(registry) == before and len(registry.versions()) == count


def test_failed_training_moves_nothing(base, registry):
    from steep.errors import SteepError

    before, count = champion_of(registry), len(registry.versions())
    with pytest.raises(SteepError, match="no_such_proj"):
        run(make_config(base, training={"lora": {"target_modules": ["no_such_proj"]}}))
    assert champion_of(registry) == before and len(registry.versions()) == count


def test_failed_gate_registers_a_challenger_only(base, registry):
    before = champion_of(registry)
    outcome = run(make_config(base, evaluation={"min_score": 0.99}))
    assert not outcome.promoted and "below evaluation.min_score" in outcome.decision.summary()
    assert champion_of(registry) == before
    assert str(registry.alias(CHALLENGER).version) == outcome.version


def test_crash_between_register_and_promote_moves_nothing(base, registry, monkeypatch):
    before = champion_of(registry)

    def crash(self, version, reason, **kw):
        raise RuntimeError("driver died between register and promote")

    monkeypatch.setattr(Registry, "promote", crash)
    with pytest.raises(RuntimeError, match="driver died"):
        run(make_config(base))
    monkeypatch.undo()
    assert champion_of(registry) == before
    assert str(registry.alias(CHALLENGER).version) != before  # the new version exists, as challenger only


def answer_when_paused(cfg: SteepConfig, approve: bool, comment: str) -> tuple[threading.Thread, dict]:
    """A reviewer in another thread, as `steep models approve` with no id: finds this project's one
    waiting run, then submits the typed form."""
    from steep import approval

    seen: dict = {}

    def reviewer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            waiting = approval.pending(cfg)
            if waiting:
                seen["pending"] = waiting
                approval.answer(approval.choose(cfg, None), approve, comment, "t")
                return
            time.sleep(0.5)

    thread = threading.Thread(target=reviewer, daemon=True)
    thread.start()
    return thread, seen


@pytest.mark.parametrize("approve", [False, True])
def test_human_approval(base, registry, approve):
    before = champion_of(registry)
    cfg = make_config(base, evaluation={"require_approval": True})
    reviewer, seen = answer_when_paused(cfg, approve, "looks fine" if approve else "too short")
    outcome = run(cfg)
    reviewer.join(timeout=5)
    (waiting,) = seen["pending"]
    assert waiting.version == outcome.version  # the listing says what the run asks to promote
    assert outcome.approval["approve"] is approve
    assert outcome.promoted is approve
    assert champion_of(registry) == (outcome.version if approve else before)
    assert ('"approve": ' + ("true" if approve else "false")) in registry.version(outcome.version).tags[
        "steep.approval"
    ]


def test_approval_timeout_is_a_rejection(base, registry):
    before = champion_of(registry)
    outcome = run(make_config(base, evaluation={"require_approval": True, "approval_timeout": "3s"}))
    assert outcome.approval["approve"] is False and "no answer" in outcome.approval["comment"]
    assert champion_of(registry) == before and not outcome.promoted


def test_evaluation_of_unchanged_models_is_cached(base, registry):
    outcome = run(make_config(base))
    cached = {e.name for e in outcome.evaluations if e.cached}
    assert "base" in cached and "challenger" not in cached
