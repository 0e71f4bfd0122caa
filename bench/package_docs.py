"""A second kind of summarization data, built offline: software documentation -> its one-line description.

Each installed Python distribution carries a long description (Markdown, reStructuredText or HTML, written for
a project page) and an author-written one-line `Summary`. `clean` turns the description into prose; one
that still holds markup afterwards, or is too short, is dropped and counted, never kept half-clean.
Which packages are installed (and so what the set holds) changes with the resolver: the set is a benchmark
input built when the benchmark runs, not a test fixture, and nothing of it is committed.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import Message
from importlib.metadata import distributions
from pathlib import Path

MIN_CHARS, MAX_CHARS = 400, 2000
SUMMARY_WORDS = (4, 30)
_INDENTED = r"(?:\n(?:[ \t]+\S[^\n]*|[ \t]*(?=\n)))*"  # the indented lines (and blank lines) below a line
_TO_BLANK = r"(?:\n[ \t]*\S[^\n]*)*"  # the lines below a line, up to the next blank one

# Whole blocks that are not prose: code, comments, tables, link definitions. Removed first, line-aware.
_BLOCKS = [
    re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?^[ \t]*\1[ \t]*$", re.M | re.S),  # fenced code
    re.compile(r"<!--.*?-->", re.S),  # html comments
    re.compile(r"<(pre|code|script|style|table)\b.*?</\1\s*>", re.S | re.I),  # html code and tables
    re.compile(r"^[ \t]*\.\.(?=[ \t]|$)[^\n]*" + _INDENTED, re.M),  # rst directives, comments, targets
    re.compile(r"::[ \t]*\n" + _INDENTED),  # rst literal blocks (`Example::` then an indented block)
    re.compile(r"^[ \t>]*\[[^\]\n]+\]:[ \t]*\S+[^\n]*$", re.M),  # markdown link reference definitions
    re.compile(r"^[ \t]*[+|][^\n]*[|+][ \t]*$", re.M),  # table rows: markdown pipes, rst grid tables
    re.compile(r"^[ \t]*>>>[^\n]*" + _TO_BLANK, re.M),  # doctest sessions
    re.compile(r"^[ \t]*(?:=+[ \t]+)+=+[ \t]*$" + _TO_BLANK, re.M),  # rst simple tables (=== === rules)
    re.compile(r"^[ \t]*[#=\-~^*+`:'\"_.]{3,}[ \t]*$", re.M),  # heading underlines, rules
]

# Inline markup, turned into its text. Order matters: images before links, links before bare urls.
_INLINE = [
    (re.compile(r"!\[[^\]]*\](?:\([^)]*\)|\[[^\]]*\])"), " "),  # images (badges), inline or by reference
    (re.compile(r"\[([^\]]*)\]\([^)]*\)"), r"\1"),  # [text](url)
    (re.compile(r"\[([^\]]+)\]\[[^\]]*\]"), r"\1"),  # [text][ref], [text][]
    (re.compile(r"\[([^\]\n]+)\](?!\()"), r"\1"),  # [text]: a shortcut reference
    (re.compile(r"`([^`<]+?)\s*<[^>]+>`__?"), r"\1"),  # rst `text <url>`_
    (re.compile(r":[\w.+-]+:`([^`]+)`"), r"\1"),  # rst roles :func:`name`
    (re.compile(r"`([^`]+)`__?"), r"\1"),  # rst `reference`_
    (re.compile(r"``([^`]+)``"), r"\1"),  # rst literals
    (re.compile(r"`([^`]+)`"), r"\1"),  # markdown code
    (re.compile(r"\|[\w .-]+\|_{0,2}"), " "),  # rst substitutions (badges)
    (re.compile(r"<(https?|ftp|mailto):[^>]*>"), " "),  # autolinks
    (re.compile(r"</?[A-Za-z][^>]*>"), " "),  # html tags
    (re.compile(r"\S*://\S+"), " "),  # bare urls, any scheme (git+https://...)
    (re.compile(r"(?<![_\w])([A-Za-z][\w-]*[A-Za-z0-9])__?(?=[\s.,;:!?)]|$)"), r"\1"),  # rst name_ links
    (re.compile(r"\*\*(\S(?:.*?\S)?)\*\*"), r"\1"),  # bold
    (re.compile(r"(?<!\w)_([^_\s](?:[^_]*?[^_\s])?)_(?!\w)"), r"\1"),  # markdown _emphasis_
    (re.compile(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])"), r"\1"),  # emphasis
    (re.compile(r"^[ \t]*[>|][ \t]?", re.M), ""),  # markdown block quotes, rst line blocks
    (re.compile(r"^[ \t]*#{1,6}[ \t]+", re.M), ""),  # markdown heading marks
    (re.compile(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+", re.M), ""),  # list bullets
    (re.compile(r"\s+"), " "),
]

# What prose never holds: left after cleaning, it means a form the cleaner does not know.
_LEFTOVER = re.compile(r"\]\(|\]\[|\]:|://|``|:\w+:`|<[/!]?[A-Za-z]|\.\. (?:[\w-]+::|_|\|)|\|[-=:]{3}")


def clean(text: str) -> str:
    """A project description (Markdown, reStructuredText or HTML) as plain prose on one line."""
    text = text.replace("\r\n", "\n")
    for pattern in _BLOCKS:
        text = pattern.sub("\n", text)
    for pattern, repl in _INLINE:
        text = pattern.sub(repl, text)
    return html.unescape(text).strip()


def leftover_markup(text: str) -> str | None:
    """The first piece of markup a cleaned text still holds, or None when it reads as prose."""
    found = _LEFTOVER.search(text)
    return found.group(0) if found else None


@dataclass
class PackageDocs:
    """The rows kept and, per reason, how many descriptions were dropped."""

    rows: list[dict] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)

    def describe(self) -> str:
        reasons = ", ".join(f"{n} {why}" for why, n in self.dropped.most_common()) or "none"
        return f"{len(self.rows)} package descriptions kept; dropped: {reasons}"


def build(metadata: Iterable[Message], exclude: frozenset[str] = frozenset({"steep"})) -> PackageDocs:
    """id/text/summary rows from distributions' metadata: one per package, no summary twice."""
    docs, seen = PackageDocs(), set()
    for meta in metadata:
        name = (meta.get("Name") or "").lower()
        summary = " ".join((meta.get("Summary") or "").split())
        raw = meta.get_payload() or meta.get("Description") or ""
        text = clean(raw if isinstance(raw, str) else "")
        why = _reject(name, summary, text, seen, exclude)
        if why:
            docs.dropped[why] += 1
            continue
        seen |= {name, summary.lower()}
        docs.rows.append({"id": name, "text": text[:MAX_CHARS], "summary": summary})
    docs.rows.sort(key=lambda r: r["id"])
    return docs


def _reject(name: str, summary: str, text: str, seen: set[str], exclude: frozenset[str]) -> str | None:
    if not name or name in exclude or name in seen:
        return "excluded or seen before"
    if summary.lower() in seen:
        return "summary already used"
    if not SUMMARY_WORDS[0] <= len(summary.split()) <= SUMMARY_WORDS[1]:
        return f"summary not {SUMMARY_WORDS[0]}-{SUMMARY_WORDS[1]} words"
    if len(text) < MIN_CHARS:
        return f"description under {MIN_CHARS} characters"
    if leftover_markup(text[:MAX_CHARS]):
        return "markup the cleaner does not know"
    return None


def write_installed(out: Path) -> PackageDocs:
    """The set from the distributions installed beside steep, written to `out` as JSONL."""
    docs = build(dist.metadata for dist in distributions())  # type: ignore[misc]
    out.write_text("".join(json.dumps(r) + "\n" for r in docs.rows))
    return docs
