"""steep.serving as plain functions: request validation, hot-swap slot, engine, key gate, manifests.

The real server runs in tests/bentos (integration tier); these check the logic it is made of, fast.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from steep.config import ServingConfig, SteepConfig
from steep.serving import (
    CONFIG_ARG,
    CONFIG_ENV,
    Engine,
    Gate,
    Item,
    LoadedModel,
    ModelSlot,
    ServingError,
    api_key,
    authorized,
    config_env,
    is_open,
    service_config,
    texts_type,
)
from steep.serving.package import ModelRef, bentofile, pinned_config, render_manifests, write_manifests
from tests.cli.test_cli import assert_user_error, steep

LIMITS = ServingConfig(max_texts=3, max_text_chars=10)


# --------------------------------------------------------------------------------------------- validation
def validate(value):
    return TypeAdapter(texts_type(LIMITS)).validate_python(value)


def errors(value) -> str:
    with pytest.raises(ValidationError) as info:
        validate(value)
    return " | ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in info.value.errors())


def test_one_text_or_a_list_become_items_of_one_request():
    [one] = validate("alpha")
    assert isinstance(one, Item) and one.text == "alpha"
    many = validate(["alpha", "bravo"])
    assert [i.text for i in many] == ["alpha", "bravo"]
    assert many[0].request_id == many[1].request_id != one.request_id


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "at least 1 item"),
        (["ok", "  \n"], "1: Value error, blank text"),
        (["a", "b", "c", "d"], "at most 3 items"),
        ("x" * 11, "0: String should have at most 10 characters"),
        (7, "texts must be a string or a list of strings, got int"),
        ([1], "0: Input should be a valid string"),
        ({"a": 1}, "got dict"),
        (None, "got NoneType"),
    ],
)
def test_bad_texts_are_refused_with_a_message_naming_the_item(value, message):
    assert message in errors(value)


def test_the_json_schema_shows_the_limits():
    schema = TypeAdapter(texts_type(LIMITS)).json_schema(mode="validation")
    assert schema["maxItems"] == 3 and schema["minItems"] == 1
    assert schema["items"]["maxLength"] == 10


# --------------------------------------------------------------------------------------------- hot swap
class FakeRegistry:
    """The alias the slot follows, and a loader that counts loads (and can fail)."""

    def __init__(self) -> None:
        self.version = "1"
        self.loads: list[str] = []
        self.broken: set[str] = set()

    def resolve(self) -> tuple[str, str]:
        return "m", self.version

    def load(self, version: str) -> LoadedModel:
        self.loads.append(version)
        if version in self.broken:
            raise RuntimeError(f"cannot load v{version}")
        return LoadedModel("m", version, f"run-{version}", summarizer=object())


def test_slot_swaps_only_when_the_alias_moves_and_batches_keep_their_snapshot():
    reg = FakeRegistry()
    slot = ModelSlot(reg.resolve, reg.load)
    with pytest.raises(ServingError, match="readyz"):
        _ = slot.current
    assert slot.refresh() and slot.current.version == "1" and slot.ready
    assert not slot.refresh() and reg.loads == ["1"]  # unchanged alias: nothing reloaded
    in_flight = slot.current  # what a running batch holds
    reg.version = "2"
    assert slot.refresh()
    assert slot.current.version == "2" and in_flight.version == "1" and slot.swaps == 1


def test_a_broken_new_version_keeps_the_old_one_serving_and_is_not_reloaded_every_poll():
    reg = FakeRegistry()
    slot = ModelSlot(reg.resolve, reg.load)
    slot.refresh()
    reg.version, reg.broken = "2", {"2"}
    assert not slot.refresh() and slot.current.version == "1"
    assert not slot.refresh() and reg.loads == ["1", "2"]
    reg.version = "3"
    assert slot.refresh() and slot.current.version == "3"


def test_a_first_load_that_fails_stops_the_start():
    reg = FakeRegistry()
    reg.broken = {"1"}
    with pytest.raises(RuntimeError, match="cannot load v1"):
        ModelSlot(reg.resolve, reg.load).refresh()


def test_the_watcher_thread_picks_up_a_moved_alias():
    reg = FakeRegistry()
    slot = ModelSlot(reg.resolve, reg.load, interval_s=0.02)
    slot.refresh()
    slot.start()
    try:
        reg.version = "2"
        deadline = time.monotonic() + 5
        while slot.current.version != "2" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert slot.current.version == "2"
    finally:
        slot.stop()


def test_concurrent_refreshes_load_a_new_version_once():
    reg = FakeRegistry()
    slot = ModelSlot(reg.resolve, reg.load)
    slot.refresh()
    reg.version = "2"
    threads = [threading.Thread(target=slot.refresh) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reg.loads == ["1", "2"]


# --------------------------------------------------------------------------------------------- engine
class EchoSummarizer:
    def summarize(self, texts, max_new_tokens=48, batch_size=8):
        return [t.split()[0] for t in texts]


@pytest.mark.parametrize("log_texts", [False, True])
def test_engine_answers_with_the_model_identity_and_logs_every_text(tmp_path, log_texts):
    from steep.inference_log import InferenceLog

    cfg = SteepConfig.model_validate(
        {"project": {"home": str(tmp_path)}, "serving": {"log_texts": log_texts}}
    )
    reg = FakeRegistry()
    reg.load = lambda v: LoadedModel("m", v, f"run-{v}", EchoSummarizer())  # type: ignore[method-assign]
    slot = ModelSlot(reg.resolve, reg.load)
    slot.refresh()
    engine = Engine(cfg, slot)
    items = TypeAdapter(texts_type(cfg.serving)).validate_python(["alpha bravo", "charlie delta echo"])
    out = engine.summarize(items)
    assert [o.summary for o in out] == ["alpha", "charlie"]
    assert {(o.model_name, o.model_version, o.run_id) for o in out} == {("m", "1", "run-1")}
    rows = InferenceLog.for_config(cfg).window(timedelta(hours=1))
    assert list(rows["n_words"]) == [2, 3] and set(rows["request_id"]) == {items[0].request_id}
    assert (rows["latency_ms"] >= 0).all() and set(rows["model_version"]) == {"1"}
    if log_texts:
        assert list(rows["text"]) == ["alpha bravo", "charlie delta echo"]
    else:
        assert rows["text"].isna().all() and rows["summary"].isna().all()
    assert engine.summarize(["plain strings work too"])[0].summary == "plain"


# --------------------------------------------------------------------------------------------- the gate
def test_api_key_fails_closed_when_its_variable_is_missing():
    assert api_key(ServingConfig()) is None
    keyed = ServingConfig(api_key_env="MY_KEY")
    with pytest.raises(ServingError, match=r"MY_KEY.*export MY_KEY"):
        api_key(keyed, environ={})
    assert api_key(keyed, environ={"MY_KEY": "k"}) == "k"


def test_authorized_accepts_the_header_or_a_bearer_token_only_with_the_right_key():
    assert authorized({}, None)
    assert authorized({"x-api-key": "k"}, "k") and authorized({"authorization": "Bearer k"}, "k")
    assert not authorized({}, "k") and not authorized({"x-api-key": "nope"}, "k")
    assert not authorized({"authorization": "Basic k"}, "k")
    assert is_open("/healthz") and is_open("/readyz") and is_open("/metrics") and is_open("/")
    assert not is_open("/summarize")


def test_gate_serves_the_page_moves_docs_and_checks_the_key(tmp_path, monkeypatch):
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    async def echo(request):
        return PlainTextResponse(f"inner {request.url.path}")

    inner = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])
    page = tmp_path / "index.html"
    page.write_text("<h1>page</h1>")
    monkeypatch.setenv("GATE_KEY", "k")
    client = TestClient(Gate(inner, page=page, serving=ServingConfig(api_key_env="GATE_KEY")))
    assert client.get("/").text == "<h1>page</h1>"
    assert client.get("/docs").text == "inner /"  # BentoML's Swagger page lives at its `/`
    assert client.get("/healthz").text == "inner /healthz"
    denied = client.post("/summarize")
    assert denied.status_code == 401 and "X-API-Key" in denied.json()["error"]
    assert client.post("/summarize", headers={"X-API-Key": "k"}).text == "inner /summarize"


# --------------------------------------------------------------------------------------------- config
def test_service_config_comes_from_the_resolved_json_or_a_file(tmp_path):
    cfg = SteepConfig.model_validate({"serving": {"port": 4123, "poll_interval": "5s"}})
    assert service_config({CONFIG_ENV: config_env(cfg)}).serving.port == 4123
    path = tmp_path / "steep.yaml"
    path.write_text("serving: {port: 4999}\n")
    assert service_config({CONFIG_ENV: str(path)}).serving.port == 4999
    with pytest.raises(Exception, match="poll_interval"):
        SteepConfig.model_validate({"serving": {"poll_interval": "soon"}})


# --------------------------------------------------------------------------------------------- packaging
MODEL = ModelRef("steep-summarizer", "7", "abc123")


def test_bentofile_pins_the_model_version_and_turns_locking_off():
    cfg = SteepConfig()
    spec = bentofile(cfg, MODEL)
    assert spec["service"] == "bentos.summarizer.service:Summarizer"
    assert spec["python"]["lock_packages"] is False
    assert any(p.startswith("torch==") for p in spec["python"]["packages"])
    assert spec["labels"]["steep.model_version"] == "7" and spec["labels"]["steep.run_id"] == "abc123"
    baked = json.loads(spec["args"][CONFIG_ARG])
    assert service_config({}, arguments=spec["args"]).serving.model_alias == "7"
    moved = service_config({"STEEP__PROJECT__HOME": "/data"}, arguments=spec["args"])
    assert moved.project.home == "/data" and moved.serving.model_alias == "7"
    assert baked["serving"]["model_alias"] == "7" and baked["serving"]["host"] == "0.0.0.0"
    assert pinned_config(cfg, "7").project.home == ".steep"


def manifests(tmp_path: Path, **serving) -> dict[str, dict]:
    cfg = SteepConfig.model_validate({"project": {"name": "acme"}, "serving": serving})
    docs = render_manifests(
        cfg, MODEL, "registry.invalid/acme-summarizer:v7", "acme-serving", "http://mlflow:5000"
    )
    path = write_manifests(docs, tmp_path / "k8s" / "summarizer.yaml")
    parsed = list(yaml.safe_load_all(path.read_text()))
    return {d["kind"]: d for d in parsed}


def test_manifests_deploy_the_image_with_probes_and_an_hpa_from_serving(tmp_path):
    docs = manifests(
        tmp_path, port=3100, min_replicas=2, max_replicas=9, target_cpu_utilization=55, api_key_env="ACME_KEY"
    )
    assert set(docs) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    dep, svc, hpa = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"]
    assert {d["metadata"]["namespace"] for d in docs.values()} == {"acme-serving"}
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    [container] = dep["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.invalid/acme-summarizer:v7"
    assert container["ports"][0]["containerPort"] == 3100
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"]  # an HPA on CPU utilization needs a CPU request
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"
    [mount] = container["volumeMounts"]
    assert env["STEEP__PROJECT__HOME"]["value"] == mount["mountPath"]
    assert dep["spec"]["template"]["spec"]["volumes"][0]["name"] == mount["name"]
    assert env["ACME_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "acme-summarizer-api-key"
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "acme-summarizer",
    }
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 9
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["averageUtilization"] == 55


def test_manifests_without_a_key_carry_no_secret_and_keep_one_replica(tmp_path):
    docs = manifests(tmp_path, min_replicas=0, max_replicas=3)
    [container] = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert all("valueFrom" not in e for e in container["env"])
    assert docs["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 1


# --------------------------------------------------------------------------------------------- the CLI
def test_steep_serve_stops_early_without_a_champion_or_without_its_key(tmp_path):
    home = ["--set", f"project.home={tmp_path / 'home'}"]
    assert_user_error(steep("serve", *home), "no version with alias 'champion'", "steep run")
    keyed = ["--set", "serving.api_key_env=STEEP_NO_SUCH_KEY_VAR"]
    assert_user_error(steep("serve", *home, *keyed), "STEEP_NO_SUCH_KEY_VAR", "serving.api_key_env: null")


def test_steep_package_manifests_only_writes_parseable_yaml(tmp_path):
    from tests.bentos.conftest import register_tiny, tiny_serving_config

    cfg = tiny_serving_config(tmp_path / "home", tmp_path / "tiny")
    version = register_tiny(cfg, tmp_path / "tiny")
    config = tmp_path / "steep.yaml"
    from steep.config import dump_config

    config.write_text(dump_config(cfg))
    out = tmp_path / "out"
    result = steep("package", "--config", str(config), "--manifests-only", "--image-repo", "repo.invalid/x",
                   "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    docs = {d["kind"]: d for d in yaml.safe_load_all((out / "k8s" / "summarizer.yaml").read_text())}
    [container] = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"repo.invalid/x/steep-summarizer:v{version}"
    assert docs["Deployment"]["metadata"]["labels"]["steep/model-version"] == version
