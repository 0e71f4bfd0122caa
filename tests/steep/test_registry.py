import mlflow
import pytest
from mlflow import MlflowClient

from steep.config import EvaluationConfig
from steep.registry import (
    CHALLENGER,
    CHAMPION,
    METRICS,
    Registry,
    RegistryError,
    logged_model_id,
    promotion_decision,
)
from steep.stack import daemons


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
