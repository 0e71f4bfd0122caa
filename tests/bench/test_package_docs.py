"""bench/package_docs.py: descriptions in every markup form real packages use, cleaned to prose.

The inputs are written here, not read from what is installed: the outcome never depends on the resolver."""

from __future__ import annotations

import json
from email.message import Message

import pytest

from bench import package_docs as docs

MARKDOWN_BADGES = """\
[github_release]: https://img.shields.io/github/release/acme/kit.svg?logo=github
[pypi_version]: https://img.shields.io/pypi/v/kit.svg

[![GitHub Release][github_release]](https://github.com/acme/kit/releases/)
[![PyPI Version][pypi_version]](https://pypi.org/project/kit/)
<br>
[![CI](https://github.com/acme/kit/actions/workflows/ci.yml/badge.svg)](https://github.com/acme/kit/actions)
![coverage](https://img.shields.io/badge/coverage-100-green)

# Kit - a **style-preserving** TOML library

Kit is a [TOML](https://toml.io/) library; see the [docs][] and the [guide][guide-link].

[docs]: https://kit.readthedocs.io/
[guide-link]: https://kit.readthedocs.io/guide
"""

MARKDOWN_BODY = """\
## Usage

> Note: `load` keeps comments.

```bash
pip install kit
```

~~~python
import kit
~~~

| option | meaning |
|--------|---------|
| `sort` | sorts keys |

- It parses *any* file.
- It is _fast_, see <https://kit.dev/bench>.
1. Read it.

Visit https://kit.dev or git+https://github.com/acme/kit.git for more.
***
"""

HTML = """\
<p align="center">
  <img src="https://kit.dev/logo.png" alt="Kit logo" width="200">
</p>
<!-- a comment
over lines -->
<h1>Kit</h1>
<p>Fast &amp; small&nbsp;parser.</p>
<table><tr><td>a</td><td>b</td></tr></table>
<pre><code>kit.load()</code></pre>
"""

RST = """\
===
Kit
===

.. image:: https://img.shields.io/pypi/v/kit.svg
   :target: https://pypi.org/project/kit
   :alt: PyPI

|build| |docs|

.. |build| image:: https://ci.kit.dev/badge.svg
   :target: https://ci.kit.dev
.. |docs| image:: https://readthedocs.org/kit.svg

Kit works on asyncio_ or Trio_ and calls :func:`kit.load` with ``strict=True``.
Read `the manual <https://kit.dev/manual>`_ or `Changelog`_.

.. _asyncio: https://docs.python.org/3/library/asyncio.html
.. _Trio: https://trio.readthedocs.io
..
    An rst comment that is not prose.

Usage
-----

Load a file::

    import kit
    kit.load("a.toml")

.. code-block:: python

    kit.dump({})

>>> kit.load("x")
{'x': 1}

+------+-----+
| key  | val |
+======+=====+
| a    | 1   |
+------+-----+

=====  =====
col    col
=====  =====

| A line block,
| kept as text.

Done... and dusted.
"""


@pytest.mark.parametrize(
    ("text", "prose"),
    [
        (
            MARKDOWN_BADGES,
            "Kit - a style-preserving TOML library Kit is a TOML library; see the docs and the guide.",
        ),
        (
            MARKDOWN_BODY,
            "Usage Note: load keeps comments. It parses any file. It is fast, see . Read it. "
            "Visit or for more.",
        ),
        (HTML, "Kit Fast & small\xa0parser."),
        (
            RST,
            "Kit Kit works on asyncio or Trio and calls kit.load with strict=True. "
            "Read the manual or Changelog. Usage Load a file A line block, kept as text. Done... and dusted.",
        ),
    ],
    ids=["markdown-badges-and-reference-links", "markdown-code-tables-lists", "html", "rst"],
)
def test_every_markup_form_becomes_prose(text, prose):
    cleaned = docs.clean(text)
    assert cleaned == prose
    assert docs.leftover_markup(cleaned) is None


def test_markup_the_cleaner_does_not_know_is_found():
    assert docs.leftover_markup("At best they know <!DOCTYPE> from HTML.") == "<!D"
    assert docs.leftover_markup("see [x](y") == "]("
    assert docs.leftover_markup("Wait... and see. .. so it goes") is None  # an ellipsis is prose


def metadata(name: str, summary: str, description: str) -> Message:
    meta = Message()
    meta["Name"], meta["Summary"] = name, summary
    meta.set_payload(description)
    return meta


def test_build_keeps_clean_rows_and_counts_every_drop_by_reason(tmp_path):
    prose = "A library that does one thing well and says so in plain words. " * 8
    built = docs.build(
        [
            metadata("Zeta", "Parses the zeta format quickly", MARKDOWN_BADGES + prose),
            metadata("alpha", "Reads alpha files from disk", prose),
            metadata("alpha", "Reads alpha files again", prose),  # the same package twice
            metadata("beta", "reads alpha files from disk", prose),  # the same summary (case aside)
            metadata("gamma", "Too short", prose),
            metadata("delta", "Describes delta in a sentence", "Short text."),
            metadata("epsilon", "Parses epsilon documents for you", prose + "Know <!DOCTYPE> well."),
            metadata("steep", "The project itself is never a row", prose),
        ]
    )
    assert [r["id"] for r in built.rows] == ["alpha", "zeta"]
    assert built.rows[1]["text"].startswith("Kit - a style-preserving TOML library")
    assert all(len(r["text"]) <= docs.MAX_CHARS for r in built.rows)
    assert built.dropped == {
        "excluded or seen before": 2,
        "summary already used": 1,
        "summary not 4-30 words": 1,
        "description under 400 characters": 1,
        "markup the cleaner does not know": 1,
    }
    assert "2 package descriptions kept; dropped: 2 excluded or seen before" in built.describe()


def test_the_set_is_written_as_jsonl(tmp_path, monkeypatch):
    prose = "Words about a package that a reader can summarize in a line. " * 8
    fake = [type("Dist", (), {"metadata": metadata("kit", "Keeps TOML files as written", prose)})()]
    monkeypatch.setattr(docs, "distributions", lambda: fake)
    out = tmp_path / "packages.jsonl"
    built = docs.write_installed(out)
    assert [json.loads(line) for line in out.read_text().splitlines()] == built.rows
    assert built.rows[0] == {"id": "kit", "text": prose.strip(), "summary": "Keeps TOML files as written"}
