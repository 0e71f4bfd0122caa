"""steep.figures: a figure is saved as a PNG where asked, its folder made, and closed."""

from __future__ import annotations

from steep import figures


def test_a_saved_figure_is_a_png_in_a_new_folder_and_is_closed(tmp_path):
    plt = figures.pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = figures.save(fig, tmp_path / "plots" / "line.png", dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.number not in plt.get_fignums()  # a long process does not keep it
