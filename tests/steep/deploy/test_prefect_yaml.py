"""prefect.yaml filled from the config and the stack: schedules, the drift trigger, pools, placeholders."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from steep.config import SteepConfig
from steep.deploy import DRIFT_EVENT, DeployError
from steep.deploy.prefect_yaml import DeploymentSpec, DeployPlan, module_entrypoint, plan, render
from steep.stack import Stack


def config(tmp_path: Path, **drift) -> SteepConfig:
    return SteepConfig.model_validate({"project": {"home": str(tmp_path / "home")}, "drift": drift})


def by_name(deploy_plan: DeployPlan) -> dict[str, DeploymentSpec]:
    return {d.name: d for d in deploy_plan.deployments}


def cloud_stack(target: str = "aws") -> Stack:
    return Stack(target, "http://mlflow", "s3://b", "http://prefect/api", "ray://r", "ns", "now",
                 outputs={"work_pool": "steep-k8s"})  # fmt: skip


def test_repo_prefect_yaml_fills_from_config(tmp_path):
    cfg = config(tmp_path, schedule="*/15 * * * *", retrain_schedule="0 3 * * 0", cooldown="2h")
    filled = plan(cfg, None, project_dir=tmp_path)
    d = by_name(filled)
    assert set(d) == {"finetune", "drift-check", "teardown"}
    assert filled.work_pool == "steep-process" and filled.pool_type == "process" and filled.start_worker
    assert d["drift-check"].schedules == ["*/15 * * * *"] and d["finetune"].schedules == ["0 3 * * 0"]
    assert d["finetune"].parameters["cfg"] == cfg.model_dump(mode="json")  # a dict, not its str()
    assert d["drift-check"].parameters == {"cfg": cfg.model_dump(mode="json")}
    assert d["teardown"].parameters["home"] == str((tmp_path / "home").resolve())
    (trigger,) = d["finetune"].triggers
    assert trigger["expect"] == [DRIFT_EVENT] and trigger["within"] == 7200
    assert trigger["match"] == {"prefect.resource.id": "steep.model.steep-summarizer"}
    assert trigger["parameters"] == {"reason": "drift", "trigger": "{{ event.payload }}"}  # Prefect's to fill
    assert d["finetune"].job_variables["working_dir"] == str(tmp_path.resolve())


def test_no_retrain_schedule_means_drift_only(tmp_path):
    filled = plan(config(tmp_path), None, project_dir=tmp_path)
    assert by_name(filled)["finetune"].schedules == [] and by_name(filled)["finetune"].triggers


def test_triggers_validate_as_prefect_deployment_triggers(tmp_path):
    # Prefect reads its settings once, when imported: only this test needs it, so only it imports it
    from prefect.events import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    (raw,) = by_name(plan(config(tmp_path), None, project_dir=tmp_path))["finetune"].triggers
    trigger = TypeAdapter(DeploymentTriggerTypes).validate_python(raw)
    assert trigger.within == timedelta(hours=6) and trigger.posture == "Reactive" and trigger.threshold == 1


def test_entrypoints_import_the_flows(tmp_path):
    for spec in plan(config(tmp_path), None, project_dir=tmp_path).deployments:
        flow = spec.load_flow()
        assert hasattr(flow, "to_deployment"), spec.entrypoint
    assert module_entrypoint("steep/flows/drift.py:drift_check_flow") == "steep.flows.drift:drift_check_flow"
    with pytest.raises(DeployError, match=r"path/to/file\.py:flow_function"):
        module_entrypoint("steep/flows/drift.py")


def test_cloud_stack_uses_its_kubernetes_pool(tmp_path):
    cfg = config(tmp_path)
    filled = plan(cfg, cloud_stack(), project_dir=tmp_path)
    assert (filled.work_pool, filled.pool_type, filled.start_worker) == ("steep-k8s", "kubernetes", False)
    assert filled.api_url == "http://prefect/api"
    assert by_name(filled)["finetune"].job_variables["image"] == "steep-flows:latest"
    cfg.stack.flow_image = "registry.example/steep-flows:1"
    assert by_name(plan(cfg, cloud_stack(), project_dir=tmp_path))["finetune"].job_variables["image"] == (
        "registry.example/steep-flows:1"
    )


def test_targets_key_limits_a_deployment(tmp_path):
    file = tmp_path / "prefect.yaml"
    file.write_text(
        yaml.safe_dump(
            {
                "deployments": [
                    {"name": "everywhere", "entrypoint": "steep/flows/teardown.py:teardown"},
                    {
                        "name": "cloud-only",
                        "entrypoint": "steep/flows/teardown.py:teardown",
                        "targets": ["aws"],
                    },
                ]
            }
        )
    )
    assert set(by_name(plan(config(tmp_path), None, file))) == {"everywhere"}
    assert set(by_name(plan(config(tmp_path), cloud_stack(), file))) == {"everywhere", "cloud-only"}


def test_bad_cron_and_unknown_placeholder_are_clear(tmp_path):
    with pytest.raises(DeployError, match=r"not a valid cron.*drift.schedule"):
        plan(config(tmp_path, schedule="every hour"), None, project_dir=tmp_path)
    file = tmp_path / "prefect.yaml"
    file.write_text(
        "deployments:\n  - name: x\n    entrypoint: a.py:f\n    parameters: {a: '{{ steep.nope }}'}\n"
    )
    with pytest.raises(DeployError, match=r"unknown placeholder \{\{ steep.nope \}\}"):
        plan(config(tmp_path), None, file)


def test_render_keeps_types_and_leaves_prefect_templates():
    values = {"n": 3, "d": {"k": [1]}, "drift": {"window": "24h"}}
    out = render(
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
