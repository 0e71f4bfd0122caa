"""prefect.yaml filled from the config, the cool-down rule, and `steep drift simulate`'s HTTP client.

No Prefect server here (tests/flows/test_drift.py has one); the simulate client talks to a real local HTTP
server in a thread.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from steep import deploy
from steep.config import SteepConfig
from steep.drift import DriftError, send_texts, shifted_texts
from steep.stack.core import Stack
from tests.conftest import REPO


def config(tmp_path: Path, **drift) -> SteepConfig:
    return SteepConfig.model_validate({"project": {"home": str(tmp_path / "home")}, "drift": drift})


def by_name(plan: deploy.DeployPlan) -> dict[str, deploy.DeploymentSpec]:
    return {d.name: d for d in plan.deployments}


def cloud_stack(target: str = "aws") -> Stack:
    return Stack(target, "http://mlflow", "s3://b", "http://prefect/api", "ray://r", "ns", "now",
                 outputs={"work_pool": "steep-k8s", "flow_image": "registry/steep-flows:1"})  # fmt: skip


# --------------------------------------------------------------------------------------------- plan
def test_repo_prefect_yaml_fills_from_config(tmp_path):
    cfg = config(tmp_path, schedule="*/15 * * * *", retrain_schedule="0 3 * * 0", cooldown="2h")
    plan = deploy.plan(cfg, None, project_dir=tmp_path)
    d = by_name(plan)
    assert set(d) == {"finetune", "drift-check", "teardown"}
    assert plan.work_pool == "steep-process" and plan.pool_type == "process" and plan.start_worker
    assert d["drift-check"].schedules == ["*/15 * * * *"] and d["finetune"].schedules == ["0 3 * * 0"]
    assert d["finetune"].parameters["cfg"] == cfg.model_dump(mode="json")  # a dict, not its str()
    assert d["drift-check"].parameters == {"cfg": cfg.model_dump(mode="json")}
    assert d["teardown"].parameters["home"] == str((tmp_path / "home").resolve())
    (trigger,) = d["finetune"].triggers
    assert trigger["expect"] == [deploy.DRIFT_EVENT] and trigger["within"] == 7200
    assert trigger["match"] == {"prefect.resource.id": "steep.model.steep-summarizer"}
    assert trigger["parameters"] == {"reason": "drift", "trigger": "{{ event.payload }}"}  # Prefect's to fill
    assert d["finetune"].job_variables["working_dir"] == str(tmp_path.resolve())


def test_no_retrain_schedule_means_drift_only(tmp_path):
    plan = deploy.plan(config(tmp_path), None, project_dir=tmp_path)
    assert by_name(plan)["finetune"].schedules == [] and by_name(plan)["finetune"].triggers


def test_triggers_validate_as_prefect_deployment_triggers(tmp_path):
    from prefect.events import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    (raw,) = by_name(deploy.plan(config(tmp_path), None, project_dir=tmp_path))["finetune"].triggers
    trigger = TypeAdapter(DeploymentTriggerTypes).validate_python(raw)
    assert trigger.within == timedelta(hours=6) and trigger.posture == "Reactive" and trigger.threshold == 1


def test_entrypoints_import_the_flows(tmp_path):
    for spec in deploy.plan(config(tmp_path), None, project_dir=tmp_path).deployments:
        flow = spec.load_flow()
        assert hasattr(flow, "to_deployment"), spec.entrypoint
    assert deploy.module_entrypoint("flows/drift.py:drift_check_flow") == "flows.drift:drift_check_flow"
    with pytest.raises(deploy.DeployError, match=r"path/to/file\.py:flow_function"):
        deploy.module_entrypoint("flows/drift.py")


def test_cloud_stack_uses_its_kubernetes_pool(tmp_path):
    plan = deploy.plan(config(tmp_path), cloud_stack(), project_dir=tmp_path)
    assert (plan.work_pool, plan.pool_type, plan.start_worker) == ("steep-k8s", "kubernetes", False)
    assert plan.api_url == "http://prefect/api"
    assert by_name(plan)["finetune"].job_variables["image"] == "registry/steep-flows:1"


def test_targets_key_limits_a_deployment(tmp_path):
    file = tmp_path / "prefect.yaml"
    file.write_text(
        yaml.safe_dump(
            {
                "deployments": [
                    {"name": "everywhere", "entrypoint": "flows/teardown.py:teardown"},
                    {"name": "cloud-only", "entrypoint": "flows/teardown.py:teardown", "targets": ["aws"]},
                ]
            }
        )
    )
    assert set(by_name(deploy.plan(config(tmp_path), None, file))) == {"everywhere"}
    assert set(by_name(deploy.plan(config(tmp_path), cloud_stack(), file))) == {"everywhere", "cloud-only"}


def test_bad_cron_and_unknown_placeholder_are_clear(tmp_path):
    with pytest.raises(deploy.DeployError, match=r"not a valid cron.*drift.schedule"):
        deploy.plan(config(tmp_path, schedule="every hour"), None, project_dir=tmp_path)
    file = tmp_path / "prefect.yaml"
    file.write_text(
        "deployments:\n  - name: x\n    entrypoint: a.py:f\n    parameters: {a: '{{ steep.nope }}'}\n"
    )
    with pytest.raises(deploy.DeployError, match=r"unknown placeholder \{\{ steep.nope \}\}"):
        deploy.plan(config(tmp_path), None, file)


def test_render_keeps_types_and_leaves_prefect_templates():
    values = {"n": 3, "d": {"k": [1]}, "drift": {"window": "24h"}}
    out = deploy.render(
        {
            "a": "{{ steep.n }}",
            "b": "w={{ steep.drift.window }}",
            "c": "{{ steep.d }}",
            "e": "{{ event.id }}",
        },
        values,
    )
    assert out == {"a": 3, "b": "w=24h", "c": {"k": [1]}, "e": "{{ event.id }}"}
    out["c"]["k"].append(2)
    assert values["d"] == {"k": [1]}  # filled values are copies


def test_dry_run_prints_the_plan_without_a_server(tmp_path):
    (tmp_path / "steep.yaml").write_text("project: {name: steep}\n")  # no prefect.yaml: steep's own is used
    out = subprocess.run(
        [sys.executable, "-m", "steep", "deploy", "--dry-run", "--set", f"project.home={tmp_path / 'h'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env={"PATH": "", "HOME": str(tmp_path),
        "PREFECT_HOME": str(tmp_path / "p")},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    shown = yaml.safe_load(out.stdout)
    assert [d["name"] for d in shown["deployments"]] == ["finetune", "drift-check", "teardown"]
    assert shown["deployments"][0]["parameters"]["cfg"] == "<steep.yaml as resolved now>"
    assert shown["work_pool"] == {"name": "steep-process", "type": "process"}
    assert "provision a stack first" in shown["prefect_api"]


def test_deploy_without_a_server_says_how_to_get_one(tmp_path):
    with pytest.raises(deploy.DeployError, match="steep provision"):
        deploy.require_server(None)
    with pytest.raises(deploy.DeployError, match="does not answer"):
        deploy.require_server("http://127.0.0.1:9/api")


# --------------------------------------------------------------------------------------------- cool-down
def test_cooldown_holds_until_it_has_passed():
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert not deploy.cooldown_state(None, 3600, now).held
    held = deploy.cooldown_state(now - timedelta(minutes=59), 3600, now)
    assert held.held and held.until == now + timedelta(minutes=1) and "next allowed after" in held.note
    assert not deploy.cooldown_state(now - timedelta(minutes=61), 3600, now).held


def test_event_resource_names_the_model(tmp_path):
    cfg = SteepConfig.model_validate({"project": {"name": "acme-legal"}})
    assert deploy.model_resource(cfg) == {
        "prefect.resource.id": "steep.model.acme-legal-summarizer",
        "prefect.resource.name": "acme-legal-summarizer",
    }


# --------------------------------------------------------------------------------------------- simulate
class Summarizer(BaseHTTPRequestHandler):
    """A stand-in server with the summarizer's API shape: POST /summarize {"texts": [...]}."""

    received: ClassVar[list[list[str]]] = []
    status = 200

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append(body["texts"])
        if self.path != "/summarize" or self.status != 200:
            self.send_response(self.status if self.path == "/summarize" else 404)
            self.end_headers()
            self.wfile.write(b'{"error": "nope"}')
            return
        out = [
            {"summary": t[:10], "model_version": "7", "key": self.headers.get("X-API-Key")}
            for t in body["texts"]
        ]
        payload = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Summarizer.received, Summarizer.status = [], 200
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Summarizer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_simulate_sends_batches(server):
    texts = shifted_texts([], 37, shift="domain", seed=1)
    sent = send_texts(server, texts, batch_size=16, api_key="k")
    assert (sent.texts, sent.requests, sent.versions) == (37, 3, {"7"})
    assert [len(b) for b in Summarizer.received] == [16, 16, 5]
    assert [t for b in Summarizer.received for t in b] == texts


def test_simulate_stops_on_an_error_and_says_why(server):
    Summarizer.status = 401
    with pytest.raises(DriftError, match=r"answered 401 after 0 texts.*api_key_env"):
        send_texts(server, ["a text"], batch_size=4)
    with pytest.raises(DriftError, match="steep serve"):
        send_texts("http://127.0.0.1:9", ["a text"], batch_size=4)


def test_shifted_inputs():
    base = ["The licensee shall not assign this agreement without prior written consent of the licensor."] * 5
    assert len(set(shifted_texts([], 50, "domain"))) > 25
    noise = shifted_texts(base, 10, "noise", seed=2)
    assert all(len(t.split()) >= 2 * len(base[0].split()) for t in noise)
    assert shifted_texts(base, 3, "none") == base[:3]
    with pytest.raises(DriftError, match="domain, noise or none"):
        shifted_texts(base, 3, "sideways")


def test_cli_registers_drift_and_deploy():
    out = subprocess.run([sys.executable, "-m", "steep", "drift", "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)  # fmt: skip
    assert out.returncode == 0 and "check" in out.stdout and "simulate" in out.stdout
