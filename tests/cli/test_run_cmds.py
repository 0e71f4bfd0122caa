"""The table `steep run` ends with: scores, and the challenger's lead over each model with its interval."""

from __future__ import annotations

from rich.console import Console

from steep.cli.run_cmds import results_table
from steep.scoring.scores import Evaluation, Role, Scores
from steep.significance import Interval


def render(table) -> list[str]:
    console = Console(width=160, record=True, color_system=None)
    console.print(table)
    return console.export_text().splitlines()


def test_each_row_shows_the_challengers_lead_over_it_with_the_interval():
    def iv(delta, low, high):
        return Interval(delta, low, high, 0.95, 64, 19)

    versus = {
        "lead-1": {"rouge1": iv(-0.026, -0.069, 0.018), "rouge2": iv(-0.036, -0.087, 0.017),
                   "rougeL": iv(-0.022, -0.067, 0.026)},
        "base": {"rouge1": iv(0.032, -0.012, 0.078), "rouge2": iv(0.017, -0.013, 0.059),
                 "rougeL": iv(0.037, 0.003, 0.082)},
    }  # fmt: skip
    evaluations = [
        Evaluation("lead-1", Role.BASELINE, Scores(0.2836, 0.1152, 0.2351, 1.76, 64), []),
        Evaluation(
            "challenger", Role.CHALLENGER, Scores(0.2572, 0.0796, 0.2129, 1.05, 64), [], versus=versus
        ),
        Evaluation("base", Role.BASE, Scores(0.2255, 0.0627, 0.1754, 2.76, 64), []),
    ]
    lines = render(results_table(evaluations, "test split: 64 rows, 19 documents"))
    rows = {line.split("│")[1].strip(): line for line in lines if line.count("│") > 2}
    assert "28.36  -2.6 [-6.9, +1.8]" in rows["lead-1"] and "23.51  -2.2 [-6.7, +2.6]" in rows["lead-1"]
    assert "17.54  +3.7 [+0.3, +8.2]" in rows["base"] and "2.76" in rows["base"]
    assert "21.29" in rows["challenger"] and "[" not in rows["challenger"]
    text = "\n".join(lines)
    assert "+d [low, high]: the challenger minus that model" in text and "95% paired" in text
    assert "19 documents" in text


def test_without_intervals_the_table_is_the_scores():
    plain = [Evaluation("challenger", Role.CHALLENGER, Scores(0.2572, 0.0796, 0.2129, 1.05, 64), [])]
    lines = render(results_table(plain, "test split"))
    assert any("25.72" in line and "7.96" in line and "21.29" in line for line in lines)
    assert not any("[" in line or "bootstrap" in line for line in lines)
