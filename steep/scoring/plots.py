"""The evaluation's pictures on the MLflow run: the scores side by side, and the intervals the gate reads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from steep import figures
from steep.registry import METRIC_LABELS, METRICS
from steep.scoring.scores import Evaluation, Role


def comparison_plot(evaluations: Sequence[Evaluation], path: Path) -> Path:
    """Grouped bars of ROUGE-1/2/L per model: the picture of the gate decision."""
    plt = figures.pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    width = 0.8 / max(1, len(evaluations))
    for i, ev in enumerate(evaluations):
        xs = [j + i * width for j in range(len(METRICS))]
        values = [getattr(ev.scores, m) * 100 for m in METRICS]
        bars = ax.bar(xs, values, width, label=ev.name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(
        [j + width * (len(evaluations) - 1) / 2 for j in range(len(METRICS))],
        ["ROUGE-1", "ROUGE-2", "ROUGE-L"],
    )
    ax.set_ylabel("F1 x 100")
    ax.set_title(f"test split, n={evaluations[0].scores.n}")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return figures.save(fig, path)


def intervals_plot(evaluations: Sequence[Evaluation], path: Path) -> Path | None:
    """The challenger minus each other model per metric, with its interval: what the gate is sure of.

    None when there is nothing to draw (no challenger with intervals)."""
    challenger = next((e for e in evaluations if e.role is Role.CHALLENGER and e.versus), None)
    if challenger is None:
        return None
    plt = figures.pyplot()
    names = {e.key: e.name for e in evaluations}
    keys = list(challenger.versus)
    first = challenger.versus[keys[0]][METRICS[0]]
    fig, axes = plt.subplots(
        1, len(METRICS), figsize=(3 * len(METRICS) + 1, 0.5 * len(keys) + 1.6), dpi=120, sharey=True
    )
    for ax, metric in zip(axes, METRICS, strict=True):
        for y, key in enumerate(keys):
            iv = challenger.versus[key][metric]
            color = "tab:green" if iv.low > 0 else "tab:red" if iv.high < 0 else "tab:gray"
            if iv.defined:
                ax.plot([iv.low * 100, iv.high * 100], [y, y], color=color, linewidth=2.5)
            ax.plot([iv.delta * 100], [y], "o", color=color)
            ax.annotate(
                iv.format(), (iv.delta * 100, y), textcoords="offset points", xytext=(0, 6),
                ha="center", fontsize=7,
            )  # fmt: skip
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(METRIC_LABELS[metric], fontsize=9)
        ax.set_xlabel("challenger minus model (F1 x 100)", fontsize=8)
        ax.set_ylim(-0.6, len(keys) - 0.4)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_yticks(range(len(keys)), [names.get(k, k) for k in keys])
    axes[0].invert_yaxis()  # top to bottom in the order of the result table
    unit = "groups" if first.units < first.n else "rows"
    fig.suptitle(
        f"{first.confidence:.0%} paired bootstrap intervals: {first.n} test rows, {first.units} {unit} "
        "resampled",
        fontsize=9,
    )
    return figures.save(fig, path)
