"""The Terraform variables of each target, from steep.yaml."""

from __future__ import annotations

import json
from pathlib import Path

from steep.config import load_config
from steep.stack import daemons
from steep.stack import terraform as tf
from steep.stack.variables import RAY_INTERNAL, ray_internal_ports, terraform_variables, worker_range_clear


def test_terraform_variables_for_clouds_come_from_the_config(tmp_path: Path) -> None:
    cfg = load_config(None, [f"project.home={tmp_path}", "stack.gpu_nodes=1", "stack.spot=false"], environ={})
    tfvars = terraform_variables(cfg, "aws", "2026-01-01T00:00:00+00:00", "eu-west-1")
    assert tfvars["region"] == "eu-west-1" and tfvars["gpu_nodes"] == 1 and tfvars["gpu_spot"] is False
    assert tfvars["gpu_instance_type"] == "g5.xlarge" and tfvars["stack_name"] == "steep"
    local = terraform_variables(cfg, "local", "t", None)
    assert local["home"] == str(tmp_path.resolve()) and set(local["ray_internal_ports"]) == set(RAY_INTERNAL)
    assert json.dumps(local)


def test_ray_worker_range_holds_no_other_port(tmp_path: Path) -> None:
    services = set(daemons.free_ports(5))
    for _ in range(20):
        internal = ray_internal_ports("127.0.0.1", services)
        assert worker_range_clear(internal, services) and not set(internal.values()) & services
    top = internal["min-worker-port"] + daemons.RAY_WORKER_PORTS - 1
    assert not worker_range_clear({**internal, "node-manager-port": top}, set())
    assert not worker_range_clear(internal, {top})
    assert not worker_range_clear({**internal, "min-worker-port": 65500}, set())


def test_stored_ray_ports_are_kept_unless_they_collide(tmp_path: Path) -> None:
    cfg = load_config(None, [f"project.home={tmp_path}"], environ={})
    vars_file = tmp_path / "terraform" / "local" / tf.VARS_FILE
    vars_file.parent.mkdir(parents=True)
    kept = ray_internal_ports("127.0.0.1", set())
    vars_file.write_text(json.dumps({"ray_internal_ports": kept}))
    assert terraform_variables(cfg, "local", "t", None)["ray_internal_ports"] == kept
    colliding = {**kept, "node-manager-port": kept["min-worker-port"] + 1}
    vars_file.write_text(json.dumps({"ray_internal_ports": colliding}))
    fresh = terraform_variables(cfg, "local", "t", None)["ray_internal_ports"]
    assert fresh != colliding and worker_range_clear(fresh, set())
