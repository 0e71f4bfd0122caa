"""What a pipeline run records about where a model came from: tags on its MLflow run and on its model version.

Data and split digests, the validation result, the git commit of the project folder, why the run started,
the gate decision and the scores, so any model version (and any prediction it serves) traces back to its data.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow

from steep.config import SteepConfig
from steep.pipeline.prepare import PreparedData
from steep.registry import GateDecision
from steep.scoring.scores import Evaluation
from steep.validation import ValidationReport


def git_commit(project_dir: Path) -> str:
    """The commit of the user's project folder (its config and data), when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project_dir, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def run_tags(
    cfg: SteepConfig,
    reason: str,
    trigger: dict[str, Any] | None,
    report: ValidationReport,
    flow_run_id: str | None,
) -> dict[str, str]:
    """The tags of a training run: why it ran (and the event that triggered it), commit, validation."""
    tags = {
        "steep.reason": reason,
        "steep.git_commit": git_commit(cfg.root),
        "prefect.flow_run_id": str(flow_run_id),
        "steep.validation": str(report.summary()),
    }
    tags.update({f"steep.trigger.{key}": str(value) for key, value in (trigger or {}).items()})
    return tags


def tag_run(run_id: str, tags: dict[str, str]) -> None:
    """Set the tags on an MLflow run (MLflow must already point at the project's store)."""
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def version_tags(
    cfg: SteepConfig,
    prepared: PreparedData,
    evaluations: Sequence[Evaluation],
    decision: GateDecision,
) -> dict[str, Any]:
    """The tags of a registered model version: data and split digests, validation, commit, gate, scores."""
    return {
        "steep.data_digest": prepared.dataset.digest,
        **{f"steep.split_digest.{name}": digest for name, digest in prepared.splits.digests.items()},
        "steep.validation": prepared.report.summary(),
        "steep.git_commit": git_commit(cfg.root),
        "steep.gate": decision.summary(),
        "steep.gate_passed": decision.promote,
        **{f"steep.eval.{e.key}": e.scores.as_dict() for e in evaluations},
    }
