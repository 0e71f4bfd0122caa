"""The plots steep logs to MLflow: a figure made off-screen, saved as a PNG, closed.

matplotlib is imported late, by the runs that plot: it costs a second of start-up nobody else should pay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: no display is needed (servers, Ray workers, CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path, dpi: int | None = None) -> Path:
    """Lay out, write `path` (its folder made), close the figure so a long process does not keep it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
