"""steep.stack.drill: the reclaim notice it sends is the one Ray's own CLI takes, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray.scripts.scripts import drain_node

from steep.stack import drill
from steep.stack.contract import StackError


def test_the_notice_is_rays_drain_for_preemption_with_the_deadline_of_the_grace():
    argv = drill.drain_command("127.0.0.1:6399", "ab" * 28, "ray-worker-2", grace_s=30)
    assert Path(argv[0]).name == "ray" and argv[1] == "drain-node"
    with drain_node.make_context("drain-node", argv[2:]) as ctx:  # Ray's click command parses it
        params = ctx.params
    assert params["address"] == "127.0.0.1:6399" and params["node_id"] == "ab" * 28
    assert (
        params["reason"] == "DRAIN_NODE_REASON_PREEMPTION"
    )  # not IDLE_TERMINATION: Ray Train tells them apart
    assert params["deadline_remaining_seconds"] == 30
    assert "ray-worker-2" in params["reason_message"]


def test_the_drill_needs_a_local_stack(tmp_path: Path):
    with pytest.raises(StackError, match="provisioned local stack"):
        drill.choose(tmp_path / ".steep", None)
