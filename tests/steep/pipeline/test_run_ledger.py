"""steep.pipeline.run_ledger: what `steep run --resume` continues, what it refuses, one run at a time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from steep.config import SteepConfig
from steep.pipeline import run_ledger
from steep.pipeline.run_ledger import ResumeError, RunInProgress


def config(home: Path, **training: object) -> SteepConfig:
    return SteepConfig.model_validate({"project": {"home": str(home)}, "training": training})


def test_a_run_is_resumed_from_its_first_unfinished_stage(tmp_path: Path):
    cfg = config(tmp_path)
    ledger = run_ledger.start(cfg, "f-1")
    ledger.note(data_digest="abc123" * 10)
    ledger.record("train", run_id="r1", model_uri="models:/m-1")
    again = run_ledger.to_resume(cfg)  # the latest, read back from disk
    assert again.flow_run_id == "f-1" and again.status == "running"
    assert again.first_unfinished() == "evaluate" and again.outcome("train")["model_uri"] == "models:/m-1"
    run_ledger.check_unchanged(again, cfg, "abc123" * 10)  # same config, same data: fine


def test_a_changed_config_or_data_is_refused_naming_what_changed(tmp_path: Path):
    ledger = run_ledger.start(config(tmp_path, learning_rate=1e-3), "f-2")
    ledger.note(data_digest="a" * 64)
    with pytest.raises(ResumeError) as refused:
        run_ledger.check_unchanged(ledger, config(tmp_path, learning_rate=2e-3), "b" * 64)
    message = str(refused.value)
    assert "training.learning_rate: 0.001 -> 0.002" in message
    assert "data digest: aaaaaaaaaaaa -> bbbbbbbbbbbb" in message and "`steep run`" in message
    moved = config(tmp_path / "elsewhere", learning_rate=1e-3)  # where the project lives is not an input
    assert run_ledger.changes(ledger, moved, "a" * 64) == []


def test_nothing_to_resume_and_a_completed_run_are_refused(tmp_path: Path):
    cfg = config(tmp_path)
    with pytest.raises(ResumeError, match="nothing to resume"):
        run_ledger.to_resume(cfg)
    run_ledger.start(cfg, "f-3").finish("completed")
    with pytest.raises(ResumeError, match="f-3 completed: nothing to resume"):
        run_ledger.to_resume(cfg)
    with pytest.raises(ResumeError, match="no `steep run` f-9"):
        run_ledger.to_resume(cfg, "f-9")


HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from steep.config import SteepConfig
from steep.pipeline import run_ledger
cfg = SteepConfig.model_validate({{"project": {{"home": {home!r}}}}})
with run_ledger.exclusive(cfg, "f-busy"):
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_second_run_of_the_project_is_refused_naming_the_one_in_progress(tmp_path: Path):
    cfg = config(tmp_path)
    repo = str(Path(__file__).resolve().parents[3])
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.format(repo=repo, home=str(tmp_path))],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(RunInProgress, match=rf"flow run f-busy \(pid {holder.pid}, since"):
            run_ledger.check_free(cfg)
        with pytest.raises(RunInProgress, match="steep run --resume"), run_ledger.exclusive(cfg, "f-mine"):
            pass
    finally:
        holder.kill()  # killed hard: the kernel lets go of its lock
        holder.wait()
    run_ledger.check_free(cfg)
    with run_ledger.exclusive(cfg, "f-mine"):
        holder_now = json.loads((run_ledger.ledger_dir(cfg) / run_ledger.LOCK_FILE).read_text())
    assert holder_now["flow_run_id"] == "f-mine"
