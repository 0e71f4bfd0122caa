"""The drift loop against a real local Prefect server: check -> event -> trigger -> finetune flow run.

A real `prefect server` daemon (sqlite, free port, temp PREFECT_HOME), the real prefect.yaml deployments
registered by `steep.deploy`, a real MLflow sqlite registry with a champion whose training split is the legal
set's, and inference logs written by the real `inference_log.record`. No worker: a triggered finetune run
stays Scheduled, which is what these tests look for.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from steep import deploy
from steep.config import SteepConfig, load_config
from steep.deploy.worker import WORKER_SERVICE
from steep.drift.traffic import shifted_texts
from steep.inference_log import InferenceLog, record
from steep.pipeline.prepare import prepare_splits
from steep.registry import Registry, model_name
from steep.stack import daemons
from steep.stack.record import home_of
from tests.conftest import REPO, legal_overrides

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """`prefect server start` as the local stack runs it, on a free port; stopped after the module."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("prefect-stack").resolve()
    svc = daemons.Service("prefect", home, "127.0.0.1", daemons.free_port())
    daemons.start(svc, timeout=180)
    url = f"http://127.0.0.1:{svc.port}/api"
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        daemons.stop(svc)


def make_config(home: Path, legal_jsonl: Path, **drift) -> SteepConfig:
    sets = [*legal_overrides(legal_jsonl, home), "drift.min_window_rows=40", "drift.cooldown=1h"]
    sets += [f"drift.{k}={v}" for k, v in drift.items()]
    return load_config(REPO / "steep.yaml", sets, environ={})


@pytest.fixture(scope="module")
def base(tmp_path_factory, legal_jsonl, prefect_server):
    """A champion (as far as the registry knows) trained on the legal train split; deployments registered."""
    import mlflow

    from steep import tracking

    home = tmp_path_factory.mktemp("drift")
    cfg = make_config(home / "steep", legal_jsonl)
    tracking.setup(cfg)
    splits = prepare_splits(cfg).splits  # as `steep run` splits it: the champion's training split
    client = mlflow.MlflowClient()
    run = client.create_run(client.get_experiment_by_name(cfg.project.name).experiment_id)
    registry = Registry(model_name(cfg))
    version = registry.register(
        f"runs:/{run.info.run_id}/model",
        run.info.run_id,
        {"steep.split_digest.train": splits.digests["train"]},
    )
    registry.promote(version.version, "test setup")
    ids = deploy.apply(deploy.plan(cfg, None, project_dir=home, api_url=prefect_server))
    assert set(ids) == {"steep-finetune/finetune", "steep-drift-check/drift-check", "teardown/teardown"}
    return {"home": home, "legal": legal_jsonl, "splits": splits, "champion": str(version.version)}


def config_for(base: dict, name: str) -> SteepConfig:
    """Same project, registry and server; its own inference log (each test writes its own window)."""
    import shutil

    home = base["home"] / name
    home.mkdir()
    for item in ("mlflow.db", "mlartifacts", "cache"):
        source = base["home"] / "steep" / item
        if source.exists():
            (shutil.copytree if source.is_dir() else shutil.copy)(source, home / item)
    return make_config(home, base["legal"])


def log_window(cfg: SteepConfig, texts: list[str]) -> None:
    log = InferenceLog.for_config(cfg)
    log.append(
        [
            record(t, "a summary of the clause", model_name=model_name(cfg), model_version="1", run_id="r",
                   request_id=f"q{i}", latency_ms=5.0, log_texts=False, salt=log.salt)
            for i, t in enumerate(texts)
        ]
    )  # fmt: skip


def finetune_runs() -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deploy.FINETUNE]))
        )


def wait_for_runs(count: int, timeout: float = 45.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = finetune_runs()
        if len(runs) >= count:
            return runs
        time.sleep(0.5)
    return finetune_runs()


def worker_service(cfg: SteepConfig) -> daemons.Service:
    """The daemon `deploy.start_worker` runs the project's Prefect worker as."""
    return daemons.Service(WORKER_SERVICE, home_of(cfg), "127.0.0.1", 0)


def check(cfg: SteepConfig):
    from steep.flows.drift import drift_check_flow

    return drift_check_flow(cfg)


def test_in_distribution_window_emits_nothing(base):
    cfg = config_for(base, "ok")
    before = len(finetune_runs())
    log_window(cfg, shifted_texts(list(base["splits"].test["text"]), 80, shift="none", seed=3))
    report = check(cfg)
    assert report.status == "ok", report.reasons
    assert "event" not in report.context and report.context["champion_version"] == base["champion"]
    assert "digest matches" in report.context["reference"]
    time.sleep(3)
    assert len(finetune_runs()) == before


def test_too_small_window_says_insufficient(base):
    cfg = config_for(base, "small")
    before = len(finetune_runs())
    log_window(cfg, shifted_texts([], 12, shift="domain"))  # clearly shifted, but too few rows to decide
    report = check(cfg)
    assert report.status == "insufficient" and "only 12 rows" in report.reasons[0]
    assert not report.metrics and "event" not in report.context
    time.sleep(3)
    assert len(finetune_runs()) == before


def test_a_check_that_fails_after_its_run_is_created_leaves_the_run_failed(base, monkeypatch):
    """The report's MLflow run ends FAILED (not RUNNING forever) when a step after its creation fails."""
    import mlflow

    from steep.pipeline import drift_check

    cfg = config_for(base, "failing")
    log_window(cfg, shifted_texts([], 12, shift="domain"))
    runs: list[str] = []

    def failing_log(cfg: SteepConfig, run_id: str, *rest: object) -> None:
        runs.append(run_id)
        raise RuntimeError("the tracking server went away")

    monkeypatch.setattr(drift_check, "log_report", failing_log)
    with pytest.raises(RuntimeError, match="went away"):
        check(cfg)
    (run_id,) = runs
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["steep.kind"] == "drift-check"


def test_drift_starts_one_retrain_per_cooldown(base):
    """The first drifted check emits and the trigger creates a finetune run carrying the drift report id;
    within the cool-down a second check holds its event, and even a raw event starts nothing more."""
    import mlflow
    from prefect.events import emit_event

    cfg = config_for(base, "drift")
    before = len(finetune_runs())
    log_window(cfg, shifted_texts([], 80, shift="domain", seed=4))
    first = check(cfg)
    assert first.drifted and first.context["event"] == deploy.DRIFT_EVENT and not first.context["held"]
    assert first.context["finetune_deployed"] is True
    runs = wait_for_runs(before + 1)
    assert len(runs) == before + 1
    params = runs[0].parameters
    assert params["reason"] == "drift"
    assert params["trigger"]["drift_run_id"] == first.context["drift_run_id"]
    assert params["trigger"]["champion_version"] == base["champion"]
    assert params["cfg"]["project"]["name"] == cfg.project.name  # the deployment's config, merged in
    assert params["trigger"]["metrics"]["oov_share"] > params["trigger"]["limits"]["oov_share"]

    report_run = mlflow.MlflowClient().get_run(first.context["drift_run_id"])
    assert report_run.data.tags["steep.status"] == "drift"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(report_run.info.run_id, "drift")}
    assert artifacts == {"drift/report.json", "drift/drift.png"}

    second = check(cfg)
    assert second.drifted and second.context["held"] is True
    assert second.context["event"] == deploy.HELD_EVENT and "cool-down" in second.context["cooldown"]

    emit_event(deploy.DRIFT_EVENT, resource=deploy.model_resource(cfg), payload={"drift_run_id": "raw"})
    time.sleep(5)
    assert len(finetune_runs()) == before + 1  # the trigger's own window (drift.cooldown) holds as well


def test_cli_deploy_and_check(base, prefect_server, tmp_path):
    """`steep deploy` and `steep drift check` as a user runs them, against the same server."""
    import subprocess
    import sys

    env = {**os.environ, "PREFECT_API_URL": prefect_server, "COLUMNS": "200"}
    sets = [
        arg
        for s in (*legal_overrides(base["legal"], tmp_path / "h"), "drift.cooldown=1h")
        for arg in ("-s", s)
    ]

    (tmp_path / "steep.yaml").write_text("{}\n")  # the project; the legal set comes in through --set

    def steep(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "steep", *args, *sets], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=300)  # fmt: skip

    deployed = steep("deploy", "--no-worker")
    assert deployed.returncode == 0, deployed.stderr
    assert (
        "registered steep-finetune/finetune" in deployed.stdout and "prefect worker start" in deployed.stdout
    )
    log_window(make_config(tmp_path / "h", base["legal"]), ["a clause of a contract, short"] * 5)
    checked = steep("drift", "check", "--json")
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout[checked.stdout.index("{") :])
    assert report["status"] == "insufficient" and report["window_rows"] == 5


def test_worker_runs_the_retrain_and_its_mlflow_run_links_the_report(
    base, tmp_path, prefect_server, monkeypatch
):
    """The whole loop with a worker: drift -> event -> finetune run executed (tiny model) -> MLflow tags.

    Re-registers the deployments with a tiny-model config, so it runs last in this module.
    """
    import mlflow
    from prefect import get_client

    from steep import tracking
    from tests.conftest_train import tiny_causal, toy_frame

    data = tmp_path / "toy.jsonl"
    toy_frame(80).to_json(data, orient="records", lines=True)
    cfg = SteepConfig.model_validate(
        {
            "project": {"home": str(tmp_path / "state")},  # not "steep": it would shadow the package
            "data": {"source": str(data), "sha256": None, "id_column": "id", "text_column": "text",
                     "summary_column": "summary", "group_column": "group"},
            "validation": {"summary_min_words": 1, "min_rows": 10},
            "model": {"source": str(tiny_causal(tmp_path / "tiny")), "max_source_tokens": 24,
                      "max_target_tokens": 6, "instruction": "summarize the clause ."},
            "training": {"workers": 0, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.0},
            "serving": {"max_new_tokens": 4},
            "drift": {"min_window_rows": 40, "cooldown": "1s"},
        }
    )  # fmt: skip
    plan = deploy.plan(cfg, None, project_dir=tmp_path, api_url=prefect_server)
    deploy.apply(plan)
    with get_client(sync_client=True) as client:  # earlier tests' runs would queue before ours
        for leftover in finetune_runs():
            client.delete_flow_run(leftover.id)
    time.sleep(2)  # let the cool-down of 1s from earlier tests' runs pass
    log_window(cfg, shifted_texts([], 60, shift="domain", seed=5))
    # this project has its own MLflow store: not the one an earlier setup in this process exported
    # (mlflow.set_tracking_uri sets MLFLOW_TRACKING_URI, which Runtime and the worker's processes inherit)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    deploy.start_worker(cfg, prefect_server, plan.work_pool, tmp_path)
    try:
        report = check(cfg)
        assert report.drifted and report.context["event"] == deploy.DRIFT_EVENT, report.context
        drift_run_id = report.context["drift_run_id"]
        deadline, run = time.monotonic() + 420, None
        while time.monotonic() < deadline:
            mine = [
                r for r in finetune_runs()
                if (r.parameters.get("trigger") or {}).get("drift_run_id") == drift_run_id
            ]  # fmt: skip
            if mine and mine[0].state and mine[0].state.is_final():
                run = mine[0]
                break
            time.sleep(2)
        assert run is not None, "the triggered finetune run did not finish"
        if not run.state.is_completed():
            with get_client(sync_client=True) as client:
                logs = client.read_logs()
            pytest.fail(f"finetune run {run.state.name}: {[log.message for log in logs[-15:]]}")
    finally:
        daemons.stop(worker_service(cfg))
    tracking.setup(cfg)
    found = mlflow.search_runs(
        experiment_names=[cfg.project.name],
        filter_string="tags.`steep.reason` = 'drift'",
        output_format="list",
    )
    assert len(found) == 1
    tags = found[0].data.tags
    assert tags["steep.trigger.drift_run_id"] == drift_run_id
    assert tags["prefect.flow_run_id"] == str(run.id)
    assert daemons.read_pid(worker_service(cfg)) is None
