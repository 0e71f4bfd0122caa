"""Human approval of a promotion: which `steep run` flow runs wait for an answer, and giving it.

The finetune flow pauses with a typed form (approve, comment, reviewer). Prefect keeps the paused run in
its database, so any process pointed at the same Prefect API (the stack's server, or the embedded default's
database under project.home) can list and answer it: `steep models approve`, or the Prefect UI where a
server runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from steep.config import SteepConfig
from steep.errors import SteepError

FINETUNE_FLOW = "steep-finetune"  # the flow's name (flows/finetune.py)
VERSION_TAG = "steep-version:"  # a tag the waiting flow run carries, so a listing can say what it promotes


class ApprovalError(SteepError):
    """No run waits for an answer, or the answer cannot be given."""


@dataclass(frozen=True)
class PendingApproval:
    flow_run_id: str
    flow_run_name: str
    paused_at: datetime | None
    version: str | None  # the model version the run asks to promote

    def describe(self) -> str:
        when = self.paused_at.astimezone().strftime("%Y-%m-%d %H:%M") if self.paused_at else "?"
        what = f"version {self.version}" if self.version else "a new version"
        return f"{self.flow_run_id}  {self.flow_run_name}  {what}, waiting since {when}"


def approve_command(flow_run_id: str, reject: bool = False) -> str:
    """The exact command that answers a run; printed by the waiting run itself."""
    return f"steep models approve {flow_run_id}" + (" --reject --comment '...'" if reject else "")


def pending(cfg: SteepConfig) -> list[PendingApproval]:
    """The paused `steep run` flow runs of this project, oldest first."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateName,
    )

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FINETUNE_FLOW])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused", "Suspended"]))
            ),
        )
    found = []
    for run in runs:
        project = ((run.parameters or {}).get("cfg") or {}).get("project") or {}
        if project.get("name", cfg.project.name) != cfg.project.name:
            continue
        found.append(
            PendingApproval(
                flow_run_id=str(run.id),
                flow_run_name=run.name,
                paused_at=run.state.timestamp if run.state else None,
                version=_version_of(run.tags),
            )
        )
    return sorted(found, key=lambda p: p.paused_at or datetime.min)


def _version_of(tags: list[str]) -> str | None:
    return next((t.removeprefix(VERSION_TAG) for t in tags or [] if t.startswith(VERSION_TAG)), None)


def choose(cfg: SteepConfig, flow_run_id: str | None) -> str:
    """The run to answer: the one given, else this project's only paused run; several -> list them."""
    if flow_run_id:
        return flow_run_id
    waiting = pending(cfg)
    if not waiting:
        raise ApprovalError(
            f"no `steep run` of project {cfg.project.name} is waiting for approval "
            "(evaluation.require_approval pauses a run after its gate passes)"
        )
    if len(waiting) > 1:
        listing = "\n  ".join(p.describe() for p in waiting)
        raise ApprovalError(
            f"{len(waiting)} runs of {cfg.project.name} wait for approval; name one:\n  {listing}\n"
            f"e.g. `{approve_command(waiting[0].flow_run_id)}`"
        )
    return waiting[0].flow_run_id


def answer(flow_run_id: str, approve: bool, comment: str = "", reviewer: str = "") -> None:
    """Resume the paused run with the form filled in; Prefect refuses a run that is not paused."""
    from prefect.flow_runs import resume_flow_run

    try:
        resume_flow_run(flow_run_id, run_input={"approve": approve, "comment": comment, "reviewer": reviewer})
    except Exception as exc:  # Prefect raises several types here (not found, not paused, bad id)
        raise ApprovalError(
            f"cannot answer flow run {flow_run_id}: {exc}. `steep models approve` with no id lists the "
            "runs that wait"
        ) from exc
