"""bench/quality.py's second data set: package documentation -> one-line summaries, built offline."""

from __future__ import annotations

import json

from bench import quality


def test_the_package_set_is_prose_and_summaries_of_the_installed_packages(tmp_path):
    out = tmp_path / "packages.jsonl"
    written = quality.package_descriptions(out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == len(rows) >= 100  # the packages steep installs (torch, ray, mlflow, ...)
    ids = {r["id"] for r in rows}
    assert len(ids) == len(rows) and "steep" not in ids and {"ray", "torch", "prefect"} <= ids
    assert len({r["summary"].lower() for r in rows}) == len(rows)  # a summary is never the answer twice
    for r in rows:
        assert 4 <= len(r["summary"].split()) <= 30 and 400 <= len(r["text"]) <= 2000
        text = r["text"]
        assert "](" not in text and "https://" not in text and "``" not in text  # no markup left


def test_markup_goes_and_prose_stays():
    text = "# Tool\n\n[![CI](https://x/b.svg)](https://x) A [fast](https://y) `lib` for <b>things</b>.\n==="
    for pattern, repl in quality._MARKUP:
        text = pattern.sub(repl, text)
    assert text.strip() == "Tool A fast lib for things ."
