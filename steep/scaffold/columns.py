"""What a data file's columns are for: each column profiled by its contents, then the id, text, summary and
group columns proposed from names and contents together.

Where the evidence is not clear a role gets a QUESTION (with its candidates) instead of a guess: text and
summary must be answered before steep can run; an open id or group may stay null (NULL_MEANS says what null
does).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from steep.config import SplitConfig
from steep.data import DataError

ROLES = ("id", "text", "summary", "group")
_KEYS = {"id": "id_column", "text": "text_column", "summary": "summary_column", "group": "group_column"}
_REQUIRED = {"text", "summary"}  # str fields in DataConfig; id and group may legitimately be null
_QUESTIONS = {
    "id": "which column is a unique row id?",
    "text": "which column holds the texts to summarize?",
    "summary": "which column holds the reference summaries?",
    "group": "which column groups rows that must stay in one split (e.g. the source document)?",
}
NULL_MEANS = {
    "id": "null: the row number (or the JSON object's key) is the id",
    "group": "null: every row is its own group, rows are split independently",
}
_TEXT_NAMES = {
    "text", "source_text", "original_text", "full_text", "input_text", "document", "document_text",
    "article", "article_text", "body", "content", "dialogue", "dialog", "conversation", "transcript",
    "passage", "story", "source", "src", "input", "context", "clause", "contract_text",
}  # fmt: skip
_SUMMARY_NAMES = {
    "summary", "reference_summary", "summary_text", "abstract", "highlights", "tldr", "target",
    "target_text", "tgt", "gist", "reference", "output", "synopsis",
}  # fmt: skip
_LABEL_CHARS = 64  # longer strings read as prose or titles, not as ids or document keys
_ID_NAMES = {"id", "uid", "uuid", "guid"}  # first choice; then key, idx, *_id
_ID_NAMES_2 = {"key", "idx", "row_id", "record_id", "example_id", "sample_id"}
_ID_SUFFIXES = ("_id", "_uid", "_ref", "_key")
# *_id names of the row itself: repeated values there are a broken id, not a reference to a document
_ROW_WORDS = {"row", "record", "example", "sample", "item", "entry", "line", "pair", "instance"}
_GROUP_NAMES = {
    "doc", "doc_id", "docid", "document", "document_id", "doc_title", "document_title", "group", "group_id",
    "source", "source_id", "contract", "contract_id", "case", "case_id", "article_id", "story_id",
    "dialogue_id", "conversation_id", "thread_id", "file", "filename", "url",
}  # fmt: skip
_CLEARLY_LONGER = 1.5  # "longer" by contents means at least this factor in mean characters
_MIN_COVERAGE = 0.9  # text, summary and group columns must be filled in on most rows


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _key(value: Any) -> Hashable:
    """Values as hashable keys, so lists and dicts from JSON can be counted too."""
    return value if isinstance(value, Hashable) else json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class ColumnProfile:
    """What the contents of one column look like: enough to tell ids, free text and categories apart."""

    name: str
    rows: int
    filled: int
    distinct: int
    is_text: bool
    is_float: bool
    mean_chars: float
    mean_words: float

    @property
    def coverage(self) -> float:
        return self.filled / self.rows if self.rows else 0.0

    @property
    def unique(self) -> bool:
        return self.filled == self.rows and self.distinct == self.rows

    @property
    def norm(self) -> str:
        return _norm(self.name)

    @property
    def summary_named(self) -> bool:
        return self.norm in _SUMMARY_NAMES or "summar" in self.norm or "tldr" in self.norm

    @property
    def text_named(self) -> bool:
        return not self.summary_named and self.norm in _TEXT_NAMES

    @property
    def id_tier(self) -> int | None:
        if self.name == "_key":  # the reader's column for an object of records: null uses it already
            return None
        if self.norm in _ID_NAMES:
            return 1
        if self.norm in _ID_NAMES_2 or self.norm.endswith(_ID_SUFFIXES):
            return 2
        return None

    @property
    def reference_named(self) -> bool:
        """'case_ref', 'policy_id', 'contract_key': an id named for a thing (a case, a policy); where its
        values repeat, rows share that thing. A repeating 'id' or 'record_id' names the row: a broken id."""
        head, _, tail = self.norm.rpartition("_")
        return bool(head) and f"_{tail}" in _ID_SUFFIXES and head.split("_")[-1] not in _ROW_WORDS

    @property
    def label_like(self) -> bool:
        """Short values that name something (an id, a document key), not prose or measurements."""
        return (
            not self.free_text
            and not self.is_float
            and self.coverage >= _MIN_COVERAGE
            and (not self.is_text or self.mean_chars <= _LABEL_CHARS)
        )

    @property
    def group_named(self) -> bool:
        return self.norm in _GROUP_NAMES or self.norm.endswith("_group")

    @property
    def free_text(self) -> bool:
        """Prose, not labels: mostly strings of several words, mostly distinct (or long even if repeated)."""
        if not self.is_text or self.coverage < _MIN_COVERAGE:
            return False
        varied = self.distinct >= 0.5 * self.filled or self.mean_words >= 20
        wordy = self.mean_words >= 3 or self.text_named or self.summary_named
        return varied and wordy

    def length(self) -> str:
        return f"mean {self.mean_chars:,.0f} chars"


def profile_column(name: str, series: pd.Series) -> ColumnProfile:
    values = [v for v in series.tolist() if not _is_missing(v)]
    strings = [v for v in values if isinstance(v, str)]
    is_text = bool(values) and len(strings) >= 0.95 * len(values)
    is_float = any(isinstance(v, float) and not float(v).is_integer() for v in values)
    return ColumnProfile(
        name=str(name),
        rows=len(series),
        filled=len(values),
        distinct=len({_key(v) for v in values}),
        is_text=is_text,
        is_float=is_float,
        mean_chars=sum(map(len, strings)) / len(strings) if strings else 0.0,
        mean_words=sum(len(s.split()) for s in strings) / len(strings) if strings else 0.0,
    )


@dataclass(frozen=True)
class RoleProposal:
    """One data.*_column: the column picked (or None) and why; a question when the evidence is not clear."""

    role: str
    column: str | None
    why: str
    question: str | None = None
    candidates: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"data.{_KEYS[self.role]}"

    @property
    def required(self) -> bool:
        """Unanswered, steep cannot run (text, summary); an open id or group question may stay null."""
        return self.question is not None and self.role in _REQUIRED

    def question_line(self) -> str:
        found = ", ".join(self.candidates) if self.candidates else "none found in the file"
        return f"{self.question} candidates: {found}"


@dataclass(frozen=True)
class ColumnProposal:
    rows: int
    columns: tuple[str, ...]
    roles: tuple[RoleProposal, ...] = field(default_factory=tuple)

    def role(self, name: str) -> RoleProposal:
        return next(r for r in self.roles if r.role == name)

    @property
    def questions(self) -> list[RoleProposal]:
        return [r for r in self.roles if r.question is not None]

    def settings(self) -> dict[str, str | None]:
        """data.* values for the config: the picked column, or null where a question is open."""
        return {r.key: r.column for r in self.roles}


def _ask(role: str, why: str, candidates: list[ColumnProfile] | list[str]) -> RoleProposal:
    names = tuple(c if isinstance(c, str) else c.name for c in candidates)
    return RoleProposal(role, None, why, _QUESTIONS[role], names)


def _pick(role: str, col: ColumnProfile, why: str) -> RoleProposal:
    return RoleProposal(role, col.name, why)


def _lengths(cols: list[ColumnProfile]) -> str:
    return ", ".join(f"{c.name} {c.mean_chars:,.0f}" for c in cols) + " chars on average"


def _text_and_summary(profiles: list[ColumnProfile]) -> tuple[RoleProposal, RoleProposal]:
    """Names first, contents to confirm: the text is the long free text, the summary the shorter one."""
    free = [p for p in profiles if p.free_text]
    by_name = {p.name: p for p in profiles}
    t_named = [p for p in free if p.text_named]
    s_named = [p for p in free if p.summary_named]
    rest = [p for p in free if not p.text_named and not p.summary_named]
    text: RoleProposal | None = None
    summary: RoleProposal | None = None
    if len(t_named) == 1:
        text = _pick("text", t_named[0], f"name {t_named[0].name!r}; free text, {t_named[0].length()}")
    elif t_named:
        text = _ask("text", f"several text-like columns: {_lengths(t_named)}", t_named)
    if len(s_named) == 1:
        summary = _pick("summary", s_named[0], f"name {s_named[0].name!r}; free text, {s_named[0].length()}")
    elif s_named:
        summary = _ask("summary", f"several summary-like columns: {_lengths(s_named)}", s_named)

    def others(exclude: set[str]) -> list[str]:
        """Text columns that could still be meant, for the question: not ids or one-word labels."""
        return [
            p.name
            for p in profiles
            if p.is_text and p.name not in exclude and p.coverage >= 0.5 and p.mean_words >= 2
        ]

    if text is None and summary is None:
        ranked = sorted(rest, key=lambda p: -p.mean_chars)
        if len(ranked) == 2 and ranked[0].mean_chars >= _CLEARLY_LONGER * ranked[1].mean_chars:
            long, short = ranked
            text = _pick("text", long, f"the longer of two free-text columns ({long.length()})")
            summary = _pick("summary", short, f"the shorter of two free-text columns ({short.length()})")
        elif len(ranked) >= 2:
            why = f"free-text columns that names and lengths cannot tell apart: {_lengths(ranked)}"
            text, summary = _ask("text", why, ranked), _ask("summary", why, ranked)
        elif len(ranked) == 1:
            text = _pick("text", ranked[0], f"the only free-text column ({ranked[0].length()})")
            why = "no summary-like column (a shorter free-text column)"
            summary = _ask("summary", why, others({ranked[0].name}))
        else:
            text = _ask("text", "no free-text column (several words per row, mostly distinct)", others(set()))
            summary = _ask("summary", "no free-text column for the summaries either", others(set()))
    elif text is None and summary is not None:
        picked = by_name.get(summary.column or "")
        pool = [p for p in rest if picked is None or p.mean_chars > picked.mean_chars]
        ranked = sorted(pool, key=lambda p: -p.mean_chars)
        if len(ranked) == 1 or (
            len(ranked) > 1 and ranked[0].mean_chars >= _CLEARLY_LONGER * ranked[1].mean_chars
        ):
            text = _pick("text", ranked[0], f"the longest free-text column ({ranked[0].length()})")
        elif ranked:
            text = _ask("text", f"several long free-text columns: {_lengths(ranked)}", ranked)
        else:
            text = _ask(
                "text", "no free-text column longer than the summaries", others({summary.column or ""})
            )
    elif summary is None:
        picked = by_name.get(text.column or "")
        pool = [p for p in rest if picked is None or p.mean_chars < picked.mean_chars]
        if len(pool) == 1:
            why = f"the only other free-text column, shorter than the text ({pool[0].length()})"
            summary = _pick("summary", pool[0], why)
        elif pool:  # the shortest might as well be a title: ask
            summary = _ask("summary", f"several shorter free-text columns: {_lengths(pool)}", pool)
        else:
            why = "no summary-like column (a free-text column shorter than the text)"
            summary = _ask("summary", why, others({text.column or ""}))
    if text.column and summary.column:
        long, short = by_name[text.column], by_name[summary.column]
        if long.mean_chars <= short.mean_chars:
            why = (
                f"by name {long.name!r} is the text and {short.name!r} the summary, but the summaries are "
                f"not shorter ({_lengths([long, short])})"
            )
            text, summary = _ask("text", why, [long, short]), _ask("summary", why, [long, short])
        else:
            ratio = long.mean_chars / max(short.mean_chars, 1.0)
            text = RoleProposal("text", long.name, f"{text.why}, {ratio:.1f}x the summary")
    return text, summary


def _id(profiles: list[ColumnProfile], taken: set[str]) -> RoleProposal:
    named = [p for p in profiles if p.id_tier is not None and p.name not in taken]
    unique = [p for p in named if p.unique and not p.is_float]
    best = [p for p in unique if p.id_tier == min(q.id_tier or 0 for q in unique)]
    if len(best) == 1:
        why = f"name {best[0].name!r}; all {best[0].rows:,} values unique"
        return _pick("id", best[0], why)
    if best:
        return _ask("id", f"several unique id-like columns; {NULL_MEANS['id']}", best)
    by_content = [
        p for p in profiles if p.name not in taken and p.unique and p.label_like and p.name != "_key"
    ]
    if len(by_content) == 1:
        p = by_content[0]
        return _pick("id", p, f"all {p.rows:,} values unique and short, as ids are")
    if by_content:
        return _ask("id", f"several columns with unique short values; {NULL_MEANS['id']}", by_content)
    repeated = [p.name for p in named if not p.unique]
    note = f" ({', '.join(repeated)} repeat values)" if repeated else ""
    if any(p.name == "_key" for p in profiles):
        why = f"records keyed by id in a JSON object: null uses those keys{note}"
    else:
        why = f"no unique id-like column (id, uid, *_id){note}; {NULL_MEANS['id']}"
    return RoleProposal("id", None, why)


def min_groups() -> int:
    """Each group goes whole into one split, so there must be a group for every non-empty split."""
    split = SplitConfig()
    return sum(1 for frac in (split.train, split.validation, split.test) if frac > 0)


def _set_aside(p: ColumnProfile, needed: int) -> str:
    """Why a column whose values repeat is not the document key, for the why of a null group."""
    if p.distinct == 1:
        return f"{p.name!r} has one value"
    if p.is_float:
        return f"{p.name!r} holds measurements (decimals)"
    if p.coverage < _MIN_COVERAGE:
        return f"{p.name!r} is empty on {p.rows - p.filled:,} of {p.rows:,} rows"
    if p.free_text:
        return f"{p.name!r} is free text"
    if p.id_tier is not None and not p.reference_named:
        return f"{p.name!r} repeats but names the row (a broken id, not a document key)"
    if not p.group_named and not p.reference_named and not p.label_like:
        return f"{p.name!r} has long values ({p.length()})"
    return f"{p.name!r} has only {p.distinct} values, a split needs {needed}"


def _group(profiles: list[ColumnProfile], taken: set[str]) -> RoleProposal:
    """Named group columns first, then references (an id-like name whose values repeat: 'case_ref'), then
    short repeated values found by contents; several at one level are a question."""
    needed = min_groups()
    repeated = [p for p in profiles if p.name not in taken and p.name != "_key" and p.distinct < p.filled]
    usable = [
        p
        for p in repeated
        if not p.is_float and not p.free_text and p.coverage >= _MIN_COVERAGE and p.distinct > 1
    ]
    named = [p for p in usable if p.group_named]
    references = [p for p in usable if not p.group_named and p.reference_named]
    by_content = [p for p in usable if not p.group_named and p.id_tier is None and p.label_like]
    levels = [
        (named, "grouping columns", "name {name!r}; {distinct} distinct values over {rows} rows"),
        (
            references,
            "id-like columns whose values repeat (references to a document or case)",
            "name {name!r} reads as a reference and its values repeat: {distinct} distinct over {rows} rows, "
            "as a document key",
        ),
        (
            by_content,
            "repeated-value columns",
            "short values repeated over rows ({distinct} distinct over {rows}), as a document key",
        ),
    ]
    for pool, several, reason in levels:
        enough = [p for p in pool if p.distinct >= needed]
        if len(enough) == 1:
            p = enough[0]
            why = reason.format(name=p.name, distinct=f"{p.distinct:,}", rows=f"{p.rows:,}")
            return _pick("group", p, f"{why}; each value is kept whole in one split")
        if enough:
            counts = ", ".join(f"{p.name} {p.distinct:,}" for p in enough)
            return _ask(
                "group", f"several {several} (distinct values: {counts}); {NULL_MEANS['group']}", enough
            )
    if repeated:
        aside = "; ".join(_set_aside(p, needed) for p in repeated)
        why = f"no column to keep whole in one split ({aside}); {NULL_MEANS['group']}"
    else:
        why = f"no other column repeats values (like doc, group, source); {NULL_MEANS['group']}"
    return RoleProposal("group", None, why)


def propose_columns(frame: pd.DataFrame) -> ColumnProposal:
    """Propose data.id/text/summary/group_column for a raw table, from names and contents."""
    if frame.empty:
        raise DataError("the data file has no rows; steep init needs some examples to map its columns")
    profiles = [profile_column(str(name), frame[name]) for name in frame.columns]
    text, summary = _text_and_summary(profiles)
    taken = {c for c in (text.column, summary.column) if c}
    ident = _id(profiles, taken)
    group = _group(profiles, taken | {ident.column or ""})
    return ColumnProposal(
        rows=len(frame),
        columns=tuple(p.name for p in profiles),
        roles=(ident, text, summary, group),
    )
