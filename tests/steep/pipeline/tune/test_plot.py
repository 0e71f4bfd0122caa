"""The trials' plot (steep.pipeline.tune.plot) is drawn and written as a PNG."""

from __future__ import annotations

from steep.pipeline.tune import trials_plot
from tests.steep.pipeline.tune.conftest import outcome


def test_the_trials_plot_is_written(tmp_path):
    outcomes = [
        outcome(1, score=0.2, loss=2.0, is_defaults=True),
        outcome(2, "stopped", loss=3.0),
        outcome(3, "failed"),
    ]
    path = trials_plot(outcomes, "rougeL", tmp_path / "plot.png", best=outcomes[0])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
