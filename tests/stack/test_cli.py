"""`steep provision | destroy | status | get`: one clear message on bad input; how destroy tears down."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from steep.cli import main
from steep.stack import CONTRACT, current
from steep.stack.record import write_record


def _run(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["steep", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out + out.err


@pytest.fixture
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS", "ARM_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)


def test_unknown_target(cfg_sets, stack_home, monkeypatch, capsys) -> None:
    code, text = _run(["provision", "--target", "mars", "--yes", *_sets(cfg_sets)], monkeypatch, capsys)
    assert code == 2 and "unknown target 'mars'; choose one of: local, aws, gcp, azure" in text
    assert not (stack_home / "terraform").exists()


def test_missing_credentials(cfg_sets, stack_home, no_credentials, monkeypatch, capsys) -> None:
    code, text = _run(["provision", "-t", "gcp", "--yes", *_sets(cfg_sets)], monkeypatch, capsys)
    assert code == 2 and "no gcp credentials found" in text and "gcloud auth" in text
    assert not (stack_home / "terraform").exists()


def test_region_that_does_not_exist(cfg_sets, monkeypatch, capsys) -> None:
    args = ["provision", "-t", "azure", "--yes", *_sets([*cfg_sets, "stack.region=moon-1"])]
    code, text = _run(args, monkeypatch, capsys)
    assert code == 2 and "'moon-1' is not a region of azure" in text


def test_budget_below_the_estimate(cfg_sets, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AWS_PROFILE", "test")
    args = ["provision", "-t", "aws", "--budget", "0.5", "--yes", *_sets([*cfg_sets, "stack.gpu_nodes=2"])]
    code, text = _run(args, monkeypatch, capsys)
    assert code == 2 and "exceeds the budget of $0.50/hour" in text and "g5.xlarge" in text


def test_bad_ttl(cfg_sets, monkeypatch, capsys) -> None:
    code, text = _run(["provision", "--ttl", "soon", "--yes", *_sets(cfg_sets)], monkeypatch, capsys)
    assert code == 2 and "--ttl: a duration like 90s, 15m, 4h or 2d, got 'soon'" in text


def test_port_in_use(cfg_sets, stack_home, monkeypatch, capsys) -> None:
    port = int(next(s for s in cfg_sets if s.startswith("stack.local.mlflow_port=")).split("=")[1])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        code, text = _run(["provision", "--yes", *_sets(cfg_sets)], monkeypatch, capsys)
    assert code == 2 and f"port {port}" in text and "stack.local.mlflow_port" in text
    assert not (stack_home / "terraform" / "local" / "terraform.tfstate").exists()


def test_nothing_provisioned(cfg_sets, monkeypatch, capsys) -> None:
    code, text = _run(["destroy", "--yes", *_sets(cfg_sets)], monkeypatch, capsys)
    assert code == 0 and "nothing to destroy" in text
    code, text = _run(["status", *_sets(cfg_sets)], monkeypatch, capsys)
    assert code == 0 and "no stack provisioned" in text
    code, text = _run(["get", "mlflow_tracking_uri", *_sets(cfg_sets)], monkeypatch, capsys)
    assert code == 2 and "run `steep provision` first" in text


def _provisioned(home: Path) -> None:
    """A record with no Terraform working copy: the teardown has nothing to run Terraform on."""
    home.mkdir(parents=True)
    outputs = {k: "x" for k in CONTRACT} | {"target": "local", "created_at": "2026-01-01T00:00:00+00:00"}
    write_record(home, outputs, None, None)


def test_destroy_runs_the_flow_when_prefect_answers(cfg_sets, stack_home, monkeypatch, capsys) -> None:
    from steep.flows import (
        teardown as teardown_flow,  # Prefect reads its settings at import: not at collection
    )

    calls = []
    monkeypatch.setattr(teardown_flow, "api_problem", lambda: None)
    monkeypatch.setattr(teardown_flow, "teardown", lambda **kw: calls.append(kw) or ["local"])
    _provisioned(stack_home)
    code, text = _run(["destroy", "--yes", *_sets(cfg_sets)], monkeypatch, capsys)
    assert code == 0 and "destroyed local" in text and "without it" not in text
    assert calls == [{"home": str(stack_home.resolve()), "reason": "steep destroy", "force_unlock": False}]


def test_destroy_tears_down_without_prefect_when_it_cannot_start(
    cfg_sets, stack_home, monkeypatch, capsys
) -> None:
    from steep.flows import teardown as teardown_flow

    monkeypatch.setattr(teardown_flow, "api_problem", lambda: "no server here")
    monkeypatch.setattr(teardown_flow, "teardown", lambda **kw: pytest.fail("the flow must not run"))
    _provisioned(stack_home)
    code, text = _run(["destroy", "--yes", *_sets(cfg_sets)], monkeypatch, capsys)
    assert code == 0 and "Prefect could not start (no server here); tearing down without it" in text
    assert "teardown (steep destroy): local" in text and "destroyed local" in text
    assert current(stack_home) is None


def _sets(sets: list[str]) -> list[str]:
    return [arg for s in sets for arg in ("--set", s)]
