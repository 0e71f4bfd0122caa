"""The plot of a `steep tune` search, logged on its parent run: each trial's validation score beside the
validation loss curves that the early stopping saw."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from steep import figures
from steep.pipeline.tune.outcomes import TrialOutcome
from steep.registry import METRIC_LABELS


def trials_plot(outcomes: Sequence[TrialOutcome], metric: str, path: Path, best: TrialOutcome | None) -> Path:
    """Left: each trial's validation score (the best in green; stopped and failed ones marked). Right: the
    validation loss at each epoch's end, per trial: what the early stopping saw."""
    plt = figures.pyplot()
    from matplotlib.ticker import MaxNLocator  # after pyplot(): matplotlib loads only where a plot is drawn

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for o in outcomes:
        if o.status == "finished" and o.val_score is not None:
            color = "tab:green" if o is best else ("tab:orange" if o.is_defaults else "tab:blue")
            left.bar(o.index, o.val_score * 100, color=color)
            left.annotate(f"{o.val_score * 100:.1f}", (o.index, o.val_score * 100), ha="center",
                          va="bottom", fontsize=7)  # fmt: skip
        else:
            mark = "x" if o.status == "failed" else "|"
            left.plot([o.index], [0], marker=mark, color="tab:red" if o.status == "failed" else "tab:gray")
            left.annotate(o.status, (o.index, 0), textcoords="offset points", xytext=(0, 6), ha="center",
                          fontsize=7, rotation=90)  # fmt: skip
        if o.val_losses:
            epochs = [row["epoch"] for row in o.val_losses]
            losses = [row["val_loss"] for row in o.val_losses]
            style = "-" if o.status == "finished" else ":"
            right.plot(epochs, losses, style, marker="o", label=f"trial {o.index}")
    left.set_xlabel("trial")
    left.set_ylabel(f"validation {METRIC_LABELS[metric]} (F1 x 100)")
    left.set_title("best in green, the defaults in orange", fontsize=9)
    left.set_xticks([o.index for o in outcomes])
    left.set_ylim(bottom=0)
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlabel("epoch")
    right.set_ylabel("validation loss per summary token")
    right.set_title("dotted: stopped before it was scored", fontsize=9)
    if any(o.val_losses for o in outcomes):
        right.legend(fontsize=7, frameon=False)
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
    return figures.save(fig, path)
