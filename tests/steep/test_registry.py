import math

import mlflow
import pytest
from mlflow import MlflowClient

from steep.config import ConfigError, EvaluationConfig, load_config
from steep.registry import (
    CHALLENGER,
    CHAMPION,
    METRICS,
    Registry,
    RegistryError,
    logged_model_id,
    promotion_decision,
)
from steep.significance import Interval
from steep.stack import daemons
from steep.tracking import artifact_location


def scores(r1, r2, rl):
    return {"rouge1": r1, "rouge2": r2, "rougeL": rl}


# ------------------------------------------------------------------------------------------------ gate
def test_gate_promotes_over_the_base_model_when_there_is_no_champion():
    decision = promotion_decision(
        EvaluationConfig(), scores(0.30, 0.12, 0.26), None, scores(0.20, 0.06, 0.16)
    )
    assert decision.promote and decision.reference_name == "base model"
    assert decision.challenger == pytest.approx(0.26) and decision.reference == pytest.approx(0.16)


def test_gate_refuses_a_tie_with_the_base_model():
    decision = promotion_decision(EvaluationConfig(), scores(0.2, 0.1, 0.2), None, scores(0.2, 0.1, 0.2))
    assert not decision.promote and "min_improvement" in decision.summary()


def test_gate_against_the_champion_uses_min_improvement():
    rules = EvaluationConfig(min_improvement=0.01)
    assert not promotion_decision(
        rules, scores(0.3, 0.1, 0.255), scores(0.3, 0.1, 0.25), scores(0, 0, 0)
    ).promote
    assert promotion_decision(rules, scores(0.3, 0.1, 0.265), scores(0.3, 0.1, 0.25), scores(0, 0, 0)).promote


def test_gate_min_score_and_regression_on_other_metrics():
    rules = EvaluationConfig(min_score=0.3, max_regression=0.02)
    low = promotion_decision(rules, scores(0.3, 0.1, 0.25), None, scores(0.1, 0.0, 0.1))
    assert not low.promote and "below evaluation.min_score" in low.summary()
    rules = EvaluationConfig(max_regression=0.02)
    regressed = promotion_decision(rules, scores(0.20, 0.05, 0.30), scores(0.30, 0.10, 0.25), scores(0, 0, 0))
    assert not regressed.promote
    assert (
        "rouge1 regressed by 0.1000" in regressed.summary()
        and "rouge2 regressed by 0.0500" in regressed.summary()
    )


def test_the_metrics_are_the_choices_of_evaluation_metric():
    assert METRICS == ("rouge1", "rouge2", "rougeL")
    for metric in METRICS:
        assert EvaluationConfig(metric=metric).metric == metric


def test_gate_metric_is_configurable():
    rules = EvaluationConfig(metric="rouge2", max_regression=1.0)
    decision = promotion_decision(rules, scores(0.1, 0.2, 0.1), scores(0.3, 0.1, 0.3), scores(0, 0, 0))
    assert decision.promote and decision.metric == "rouge2"


# ------------------------------------------------------------------------------------------------ gate, sure
def iv(delta, low, high, confidence=0.95):
    """An interval of challenger minus an opponent, in F1 (0..1)."""
    return Interval(delta, low, high, confidence, 64, 19)


def on_metric(interval, metric="rougeL"):
    return {m: (interval if m == metric else iv(0.0, -0.01, 0.01, interval.confidence)) for m in METRICS}


SURE = EvaluationConfig(confidence=0.95)


def test_with_confidence_the_lower_end_must_clear_min_improvement():
    sure = {"base": on_metric(iv(0.031, 0.012, 0.050))}
    decision = promotion_decision(SURE, scores(0.3, 0.1, 0.231), None, scores(0.3, 0.1, 0.20), intervals=sure)
    assert decision.promote and decision.confidence == 0.95
    assert "+3.1 ROUGE-L [+1.2, +5.0] over the base model" in decision.summary()
    assert decision.intervals == {"base model": sure["base"]["rougeL"]}
    rules = EvaluationConfig(confidence=0.95, min_improvement=0.02)  # sure of +1.2, not of +2
    assert not promotion_decision(
        rules, scores(0.3, 0.1, 0.231), None, scores(0.3, 0.1, 0.20), intervals=sure
    ).promote


def test_a_gain_that_may_be_noise_passes_the_point_rule_only():
    unsure = {"base": on_metric(iv(0.008, -0.010, 0.026))}
    args = (scores(0.3, 0.1, 0.208), None, scores(0.3, 0.1, 0.20))
    point = promotion_decision(EvaluationConfig(), *args, intervals=unsure)
    assert point.promote and point.confidence is None
    assert "rougeL gain +0.0080 over the base model, +0.8 ROUGE-L [-1.0, +2.6] at 95%" in point.summary()
    sure = promotion_decision(SURE, *args, intervals=unsure)
    assert not sure.promote
    assert (
        "+0.8 ROUGE-L [-1.0, +2.6] over the base model: at 95% the lower end does not clear" in sure.summary()
    )


def test_with_confidence_against_the_champion_a_tie_is_not_enough():
    tie = {"champion": on_metric(iv(0.0, 0.0, 0.0))}
    args = (scores(0.3, 0.1, 0.25), scores(0.3, 0.1, 0.25), scores(0, 0, 0), "champion v3")
    assert promotion_decision(EvaluationConfig(), *args, intervals=tie).promote  # the point rule keeps ties
    assert not promotion_decision(SURE, *args, intervals=tie).promote
    # a negative min_improvement asks only to be sure it is not worse by more than that
    close = {"champion": on_metric(iv(-0.002, -0.008, 0.004))}
    lenient = EvaluationConfig(confidence=0.95, min_improvement=-0.01)
    decision = promotion_decision(lenient, *args, intervals=close)
    assert decision.promote and decision.reference_name == "champion v3"
    assert "-0.2 ROUGE-L [-0.8, +0.4] over the champion v3" in decision.summary()
    # ... over a champion only: the base model must still be beaten outright
    base = {**close, "base": on_metric(iv(0.004, -0.002, 0.010))}
    rules = EvaluationConfig(confidence=0.95, min_improvement=-0.01, must_beat=["base"])
    decision = promotion_decision(rules, *args, intervals=base)
    assert not decision.promote and "over the base model: at 95% the lower end does not clear zero" in (
        decision.summary()
    )


def test_must_beat_lead1_fails_when_sure_it_loses():
    intervals = {
        "base": on_metric(iv(0.038, 0.012, 0.050)),
        "lead-1": on_metric(iv(-0.022, -0.041, -0.003)),
    }
    args = (scores(0.25, 0.08, 0.213), None, scores(0.22, 0.06, 0.175))
    lead1 = {"lead-1": scores(0.28, 0.11, 0.235)}
    rules = EvaluationConfig(confidence=0.95, must_beat=["lead-1"])
    decision = promotion_decision(rules, *args, baselines=lead1, intervals=intervals)
    assert not decision.promote
    summary = decision.summary()
    assert "+3.8 ROUGE-L [+1.2, +5.0] over the base model" in summary
    assert "-2.2 ROUGE-L [-4.1, -0.3] over lead-1: at 95% the lower end does not clear" in summary
    assert set(decision.intervals) == {"base model", "lead-1"}
    # without must_beat lead-1 is not asked; with it and the point rule, losing on the point fails too
    assert promotion_decision(SURE, *args, baselines=lead1, intervals=intervals).promote
    point = promotion_decision(
        EvaluationConfig(must_beat=["lead-1"]), *args, baselines=lead1, intervals=intervals
    )
    assert not point.promote and "rougeL gain -0.0220 over lead-1" in point.summary()


def test_must_beat_a_champion_that_does_not_exist_yet_asks_nothing():
    rules = EvaluationConfig(confidence=0.95, must_beat=["champion", "base"])
    sure = {"base": on_metric(iv(0.031, 0.012, 0.050))}
    decision = promotion_decision(rules, scores(0.3, 0.1, 0.23), None, scores(0.3, 0.1, 0.2), intervals=sure)
    assert decision.promote and decision.reasons == ["+3.1 ROUGE-L [+1.2, +5.0] over the base model"]


def test_with_confidence_and_no_interval_the_gate_refuses():
    args = (scores(0.3, 0.1, 0.30), None, scores(0.3, 0.1, 0.20))
    missing = promotion_decision(SURE, *args)
    assert not missing.promote and "no 95% interval (no per-row scores)" in missing.summary()
    one_document = {"base": on_metric(iv(0.1, math.nan, math.nan))}
    undefined = promotion_decision(SURE, *args, intervals=one_document)
    assert not undefined.promote and "too few test documents" in undefined.summary()
    lead1_missing = promotion_decision(EvaluationConfig(must_beat=["lead-1"]), *args, intervals={})
    assert (
        not lead1_missing.promote
        and "must_beat names lead-1, but it was not evaluated" in lead1_missing.summary()
    )


@pytest.mark.parametrize("value", [None, False, "off"])
def test_confidence_off_is_the_point_rule(value):
    assert EvaluationConfig(confidence=value).confidence is None


def test_gate_settings_are_checked_with_a_clear_error(tmp_path):
    config = tmp_path / "steep.yaml"
    config.write_text("evaluation:\n  confidence: 95\n  must_beat: [lead1, base]\n")
    with pytest.raises(ConfigError) as err:
        load_config(config, environ={})
    msg = str(err.value)
    assert "evaluation.confidence: must be < 1, got 95" in msg
    assert "evaluation.must_beat: unknown name 'lead1' (did you mean 'lead-1'?)" in msg
    assert "choose from lead-1, base, champion" in msg
    cfg = load_config(config, sets=["evaluation.confidence=off", "evaluation.must_beat=lead-1"], environ={})
    assert cfg.evaluation.confidence is None and cfg.evaluation.must_beat == ["lead-1"]


# ------------------------------------------------------------------------------------------------ registry
@pytest.fixture(scope="module", params=["sqlite", pytest.param("server", marks=pytest.mark.integration)])
def tracking(request, tmp_path_factory):
    """The embedded sqlite store, and a real `mlflow server` (the local stack's): their behaviour differs."""
    home = tmp_path_factory.mktemp("mlflow")
    if request.param == "sqlite":
        uri, svc = f"sqlite:///{home / 'mlflow.db'}", None
    else:
        svc = daemons.Service("mlflow", home, "127.0.0.1", daemons.free_port())
        daemons.start(svc)
        uri = f"http://{svc.host}:{svc.port}"
    mlflow.set_tracking_uri(uri)
    # artifacts beside the store, not in ./mlruns of the folder pytest runs in
    MlflowClient().create_experiment("registry-test", artifact_location=artifact_location(uri))
    mlflow.set_experiment("registry-test")
    yield MlflowClient()
    mlflow.set_tracking_uri(None)
    if svc is not None:
        daemons.stop(svc)


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


@pytest.fixture
def registry(tracking, request):
    return Registry(f"test-{request.node.name.replace('_', '-')}", tracking)


def new_version(registry, tmp_path, n):
    with mlflow.start_run() as run:
        artifact = tmp_path / f"model{n}.txt"
        artifact.write_text(f"model {n}")
        mlflow.log_artifact(str(artifact), "model")
    return registry.register(
        f"runs:/{run.info.run_id}/model", run.info.run_id, {"steep.n": n, "scores": {"a": 1}}
    )


def test_register_sets_challenger_not_champion(registry, tmp_path):
    v1 = new_version(registry, tmp_path, 1)
    assert registry.alias(CHALLENGER).version == v1.version
    assert registry.alias(CHAMPION) is None
    assert registry.version(v1.version).tags["scores"] == '{"a": 1}'


def test_register_a_logged_model(registry):
    """What `steep run` registers: the models:/m-... URI log_model returns (a server needs its model id)."""
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Echo(), pip_requirements=[])
    assert logged_model_id(info.model_uri) == info.model_id
    version = registry.register(info.model_uri, run.info.run_id, {"steep.n": 1})
    assert version.run_id == run.info.run_id
    loaded = mlflow.pyfunc.load_model(f"models:/{registry.name}/{version.version}")
    assert list(loaded.predict(["a text"])) == ["a text"]


def test_logged_model_id_only_for_logged_model_uris():
    assert logged_model_id("models:/m-0123abc") == "m-0123abc"
    assert logged_model_id("models:/steep-summarizer/3") is None
    assert logged_model_id("models:/steep-summarizer@champion") is None
    assert logged_model_id("runs:/abc/model") is None


def test_promote_then_rollback_walks_the_history(registry, tmp_path):
    v1, v2, v3 = (new_version(registry, tmp_path, n) for n in (1, 2, 3))
    registry.promote(v1.version, "first")
    registry.promote(v3.version, "gate")
    assert registry.alias(CHAMPION).version == v3.version
    registry.promote(v2.version, "gate")
    assert registry.rollback() == (str(v2.version), str(v3.version))
    assert registry.rollback() == (str(v3.version), str(v1.version))
    assert registry.alias(CHAMPION).version == v1.version
    assert registry.champion_stack() == [str(v1.version)]
    with pytest.raises(RegistryError, match="replaced no earlier champion"):
        registry.rollback()


def test_unknown_version_and_empty_registry(registry):
    with pytest.raises(RegistryError, match="no version 42"):
        registry.promote(42, "x")
    with pytest.raises(RegistryError, match="no champion"):
        registry.rollback()
    assert registry.versions() == []
