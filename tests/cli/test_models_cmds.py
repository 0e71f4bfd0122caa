"""`steep models list | promote | rollback` on the embedded (sqlite) registry under a temp project.home, and
on a real MLflow server named by a stack record (what `steep provision` leaves): their behaviour differs."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

import steep.cli  # registers every command on the app
from steep.cli.app import app, console
from steep.config import load_config
from steep.endpoints import Runtime
from steep.registry import CHALLENGER, CHAMPION, Registry, RegistryError
from steep.stack import daemons
from steep.stack.contract import CONTRACT
from steep.stack.record import write_record

runner = CliRunner()


@pytest.fixture(params=["embedded", pytest.param("server", marks=pytest.mark.integration)])
def store(request, tmp_path_factory):
    """None (the embedded sqlite file), or the URI of a real `mlflow server` like the local stack's."""
    if request.param == "embedded":
        yield None
        return
    svc = daemons.Service("mlflow", tmp_path_factory.mktemp("mlflow"), "127.0.0.1", daemons.free_port())
    daemons.start(svc)
    yield f"http://{svc.host}:{svc.port}"
    daemons.stop(svc)


@pytest.fixture
def project(tmp_path, monkeypatch, store) -> Path:
    """A steep.yaml whose project.home is in tmp; with a server, a stack record there points at it."""
    config = tmp_path / "steep.yaml"
    config.write_text(f"project:\n  name: models-cli\n  home: {tmp_path / 'home'}\n")
    if store is not None:
        (tmp_path / "home").mkdir()
        outputs = {key: "unused" for key in CONTRACT} | {
            "mlflow_tracking_uri": store, "target": "local", "created_at": "2026-11-30T00:00:00+00:00"
        }  # fmt: skip
        write_record(tmp_path / "home", outputs, None, None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(console, "width", 200)  # one table row per version, whatever the terminal
    yield config
    mlflow.set_tracking_uri(None)


def registry_with_versions(config: Path, n: int) -> Registry:
    """n versions of the project's model, each from its own run (as `steep run` registers them)."""
    runtime = Runtime.of(load_config(config))
    experiment = runtime.setup_tracking()
    registry = runtime.registry()
    for i in range(1, n + 1):
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_text(f"model {i}", "model/weights.txt")
        registry.register(
            f"runs:/{run.info.run_id}/model",
            run.info.run_id,
            {"steep.eval.challenger": {"rougeL": 0.2 + i / 100}, "steep.gate_passed": i % 2 == 1},
        )
    return registry


def steep(config: Path, *args: str):
    return runner.invoke(app, ["models", *args, "--config", str(config)])


def test_list_without_versions_says_how_to_get_one(project):
    result = steep(project, "list")
    assert result.exit_code == 0, result.output
    assert "no versions of models-cli-summarizer yet" in result.output


def test_list_shows_versions_aliases_scores_and_local_dates(project):
    registry = registry_with_versions(project, 2)
    registry.promote("1", "first")
    result = steep(project, "list")
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 2}
    assert set(rows) == {"1", "2"}  # (the header row is drawn with ┃)
    assert CHAMPION in rows["1"] and CHALLENGER in rows["2"]
    assert "21.00" in rows["1"] and "pass" in rows["1"]
    assert "22.00" in rows["2"] and "fail" in rows["2"]
    for version in registry.versions():
        local = datetime.fromtimestamp(version.creation_timestamp / 1000).strftime("%Y-%m-%d %H:%M")
        assert local in rows[str(version.version)]
        assert version.run_id[:12] in rows[str(version.version)]
    assert not re.search(r"\d{13}", result.output)  # no epoch milliseconds


def test_list_shows_each_versions_lead_with_its_interval(project):
    """Read from the run's metrics: against the champion it was gated against, or the base model (marked)
    when there was none, and against Lead-1; a version from before intervals shows nothing there."""
    registry = registry_with_versions(project, 3)
    client = mlflow.MlflowClient()
    runs = {str(v.version): v.run_id for v in registry.versions()}
    logged = {
        "2": {"delta_base_rougeL": 0.038, "delta_base_rougeL_low": 0.012, "delta_base_rougeL_high": 0.05,
              "delta_lead1_rougeL": -0.022, "delta_lead1_rougeL_low": -0.041,
              "delta_lead1_rougeL_high": -0.003},
        "3": {"delta_champion_rougeL": 0.004, "delta_champion_rougeL_low": -0.011,
              "delta_champion_rougeL_high": 0.019, "delta_base_rougeL": 0.05, "delta_lead1_rougeL": 0.021,
              "delta_lead1_rougeL_low": 0.002, "delta_lead1_rougeL_high": 0.04},
    }  # fmt: skip
    for version, metrics in logged.items():
        for key, value in metrics.items():
            client.log_metric(runs[version], key, value)
    result = steep(project, "list")
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 2}
    assert (
        "Δ vs champion" in result.output
        and "Δ vs lead-1" in result.output
        and "Δ: ROUGE-L minus" in (result.output)
    )
    assert "+3.8 [+1.2, +5.0] (base)" in rows["2"] and "-2.2 [-4.1, -0.3]" in rows["2"]
    assert "+0.4 [-1.1, +1.9]" in rows["3"] and "(base)" not in rows["3"] and "+2.1 [+0.2, +4.0]" in rows["3"]
    assert "[" not in rows["1"]  # evaluated before intervals: nothing to show


def test_promote_makes_a_version_champion(project):
    registry = registry_with_versions(project, 2)
    result = steep(project, "promote", "2", "--reason", "better on the new clauses")
    assert result.exit_code == 0, result.output
    assert "champion is now models-cli-summarizer v2" in result.output
    assert str(registry.alias(CHAMPION).version) == "2"
    assert registry.version("2").tags["steep.promotion_reason"] == "better on the new clauses"


def test_promote_an_unknown_version_is_a_user_error(project):
    registry_with_versions(project, 1)
    result = steep(project, "promote", "7")
    assert isinstance(result.exception, RegistryError)  # main() prints it as one line, exit code 2
    assert "has no version 7" in str(result.exception)


def test_rollback_moves_the_champion_back_then_runs_out(project):
    registry = registry_with_versions(project, 2)
    assert steep(project, "promote", "1").exit_code == 0
    assert steep(project, "promote", "2").exit_code == 0
    result = steep(project, "rollback")
    assert result.exit_code == 0, result.output
    assert "rolled back models-cli-summarizer: champion v2 -> v1" in result.output
    assert str(registry.alias(CHAMPION).version) == "1"
    again = steep(project, "rollback")
    assert isinstance(again.exception, RegistryError)
    assert "nothing to roll back to" in str(again.exception)
