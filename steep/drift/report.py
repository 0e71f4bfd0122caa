"""The drift check's decision and what it reports: a window against the champion's training split.

Any metric over its limit is drift; with `drift.calibrate` a limit is the configured threshold raised to the
level unseen training documents reach (`statistics.natural_levels`). Too few rows is "insufficient", never a
decision. The plot shows the input lengths on both sides and each metric against its limit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from steep import figures
from steep.config import DriftConfig
from steep.drift.statistics import Sample, measure, natural_levels
from steep.errors import SteepError


class DriftError(SteepError):
    """The drift check cannot run; the message says what is missing and how to provide it."""


@dataclass
class DriftReport:
    status: str  # "drift" | "ok" | "insufficient"
    window_rows: int
    metrics: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)  # as configured
    natural: dict[str, float] = field(default_factory=dict)  # the training data's own between-group level
    reasons: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)  # champion, window, digests, cool-down, event
    checked_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def drifted(self) -> bool:
        return self.status == "drift"

    @property
    def limits(self) -> dict[str, float]:
        """The thresholds in force: configured, raised to the natural level where that is higher."""
        return {k: max(v, self.natural.get(k, 0.0)) for k, v in self.thresholds.items()}

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "limits": self.limits}


def thresholds(cfg: DriftConfig) -> dict[str, float]:
    return {
        "length_psi": cfg.psi_threshold,
        "oov_share": cfg.oov_threshold,
        "word_js": cfg.js_threshold,
        "failing_share": cfg.failing_share_threshold,
    }


def compare(cfg: DriftConfig, reference: Sample, current: Sample, failing_share: float) -> DriftReport:
    """Decide drift for one window: any metric over its limit is drift."""
    configured = thresholds(cfg)
    n = len(current)
    if n < cfg.min_window_rows:
        return DriftReport(
            "insufficient",
            n,
            thresholds=configured,
            reasons=[
                f"only {n} rows in the window; drift.min_window_rows is {cfg.min_window_rows}: no decision"
            ],
        )
    if len(reference) == 0:
        raise DriftError("the reference (the champion's training split) has no rows; check data.source")
    metrics = {**measure(reference, current), "failing_share": float(failing_share)}
    natural = natural_levels(reference, n) if cfg.calibrate else {}
    report = DriftReport("ok", n, metrics, configured, natural)
    limits = report.limits
    over = []
    for key, value in metrics.items():
        if value > limits[key]:
            raised = (
                f" (drift.{_KEYS[key]} {configured[key]:.3f}, raised to what unseen training documents reach)"
                if limits[key] > configured[key]
                else ""
            )
            over.append(f"{key} {value:.3f} > {limits[key]:.3f}{raised}")
    report.status = "drift" if over else "ok"
    report.reasons = over or ["every metric under its threshold"]
    return report


_KEYS = {
    "length_psi": "psi_threshold",
    "oov_share": "oov_threshold",
    "word_js": "js_threshold",
    "failing_share": "failing_share_threshold",
}


@dataclass(frozen=True)
class Reference:
    """The champion's training split, rebuilt from the configured data, and whether it is the same data.

    `steep.pipeline.drift_check.champion_reference` builds it (load, validate, split as `steep run` did).
    """

    sample: Sample
    champion_version: str | None
    digest: str
    champion_digest: str | None

    @property
    def matches(self) -> bool:
        return self.champion_digest is None or self.digest == self.champion_digest

    def describe(self) -> str:
        who = f"champion v{self.champion_version}" if self.champion_version else "no champion"
        if self.champion_digest is None:
            return f"train split {self.digest[:12]} ({who}; no digest recorded on it)"
        if self.matches:
            return f"train split {self.digest[:12]} of {who} (digest matches)"
        return (
            f"train split {self.digest[:12]} of the configured data, which differs from {who}'s "
            f"{self.champion_digest[:12]}: the data changed since the champion was trained"
        )


def drift_plot(reference: Sample, current: Sample, report: DriftReport, path: Path) -> Path:
    """Input-length histograms (training vs window) and each metric against its limit."""
    plt = figures.pyplot()  # matplotlib loads here: only a report with metrics draws
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    ref, cur = reference.lengths or [0], current.lengths or [0]
    top = max(np.percentile(ref, 99), np.percentile(cur, 99), 1)
    bins = np.linspace(0, top, 30)
    left.hist(ref, bins=bins, density=True, alpha=0.6, label="training")
    left.hist(cur, bins=bins, density=True, alpha=0.6, label="inference window")
    left.set_xlabel("input length (words)")
    left.legend(frameon=False, fontsize=8)
    limits = report.limits
    names = [k for k in report.metrics if limits.get(k)]
    values = [report.metrics[k] / limits[k] for k in names]
    right.barh(names, values, color=["tab:red" if v > 1 else "tab:green" for v in values])
    right.axvline(1.0, color="black", lw=1, ls="--")
    right.set_xlabel("metric / threshold in force")
    fig.suptitle(f"drift check: {report.status} ({report.window_rows} rows)")
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
    return figures.save(fig, path)
