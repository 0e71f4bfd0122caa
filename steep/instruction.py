"""A model.instruction that fits the user's data: what kind of text it is, read from the texts themselves.

`steep init --data` writes the instruction a causal model is fine-tuned and served with. A dialogue data set
told to "summarize this contract clause" trains against its own prompt, so the kind of text is read from the
rows: speaker turns make a dialogue, legal wording a clause, datelines and reporting a news article, package
or product vocabulary a description; the summaries' length says "one sentence" or "a few sentences". Each
test is a plain function of one text; the proposal says how many rows showed the evidence, as the column
choices do.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# ------------------------------------------------------------------------------------------ the instructions
ONE, FEW = "one", "few"  # what the summaries' length asks for
GENERIC = "generic"
# kind -> the instruction for summaries of one sentence, and for longer ones
INSTRUCTIONS: dict[str, dict[str, str]] = {
    "dialogue": {
        ONE: "Summarize this dialogue in one sentence.",
        FEW: "Summarize this dialogue in a few sentences.",
    },
    "news": {
        ONE: "Summarize this news article in one sentence.",
        FEW: "Summarize this news article in a few sentences.",
    },
    "clause": {
        ONE: "Summarize this contract clause in one plain-English sentence.",
        FEW: "Summarize this contract clause in a few plain-English sentences.",
    },
    "software": {
        ONE: "Describe this software package in one sentence.",
        FEW: "Describe this software package in a few sentences.",
    },
    "product": {
        ONE: "Describe this product in one sentence.",
        FEW: "Describe this product in a few sentences.",
    },
    GENERIC: {
        ONE: "Summarize this text in one sentence.",
        FEW: "Summarize this text in a few sentences.",
    },
}
DEFAULT_INSTRUCTION = INSTRUCTIONS[GENERIC][ONE]  # model.instruction's default: fits any text, names none
# what the why calls each kind ("the texts read as ...")
KIND_NAMES = {
    "dialogue": "dialogue",
    "news": "news articles",
    "clause": "contract or terms clauses",
    "software": "software package descriptions",
    "product": "product descriptions",
}
MIN_SHARE = 0.5  # a kind is proposed when at least this share of the rows shows it
SAMPLE_ROWS = 500  # rows looked at, spread evenly over the file; plenty to tell a kind
MIN_DENSITY = 1.5  # vocabulary hits per 100 words for a clause or a description
MIN_VOCABULARY = 2  # ... from at least this many different marker words

# ------------------------------------------------------------------------------------------ dialogue
# A turn: a line opening with a speaker tag and a colon: '#Person1#:', 'A:', 'Speaker 1:', 'Amanda:'.
_LINE_TURN = re.compile(
    r"^[ \t]*(#[^#\n]{1,30}#|[A-Z][\w.'-]{0,24}(?: [A-Z0-9][\w.'-]{0,24})?)[ \t]*:[ \t]*\S", re.M
)
_INLINE_TAG = re.compile(r"(?<!\S)(#[A-Za-z]+\d*#):")  # DialogSum's tags, also when a file joins the lines
# Tags no heading or field name uses, so two turns of them are a dialogue even without a repeated speaker.
_PLAIN_SPEAKER = re.compile(r"#[^#]+#|[A-Z]|(?:Speaker|Person|Participant|Customer|Agent) ?\d*", re.I)


def speaker_turns(text: str) -> list[str]:
    """The speaker tags of a text's turns, in order: '#Person1#', 'A', 'Speaker 1', 'Amanda'."""
    tags = [m.group(1) for m in _LINE_TURN.finditer(text)]
    return tags if len(tags) >= 2 else _INLINE_TAG.findall(text)


def is_dialogue(text: str) -> bool:
    """Two speakers or more taking turns. A named speaker must speak twice: 'Note: ... / Price: ...' is a list
    of fields, not a conversation."""
    tags = speaker_turns(text)
    speakers = set(tags)
    if len(tags) < 2 or len(speakers) < 2:
        return False
    return len(tags) > len(speakers) or all(_PLAIN_SPEAKER.fullmatch(t) for t in speakers)


# ------------------------------------------------------------------------------------------ vocabularies
_LEGAL = (
    "shall", "shall not", "hereby", "herein", "hereunder", "thereof", "pursuant", "deemed", "indemnify",
    "indemnification", "liability", "liable", "damages", "warranty", "warranties", "disclaim", "as is",
    "sole risk", "license", "licence", "licensee", "licensor", "sublicensable", "royalty", "irrevocable",
    "perpetual", "agree", "agrees", "agreed", "agreement", "party", "parties", "third party", "third parties",
    "terminate", "termination", "breach", "violate", "violation", "dispute", "class action", "jurisdiction",
    "arbitration", "governing law", "applicable law", "law", "laws", "comply", "rights",
    "intellectual property", "copyright", "trademark", "permission", "prohibited", "unauthorized",
    "authorized", "permitted", "these terms", "the terms", "terms of service", "terms of use",
    "privacy policy", "privacy", "gdpr", "personal data", "personal information", "personally identifiable",
    "collect", "disclose", "opt out", "we may", "you may", "you may not", "may not", "you must",
    "you must not", "must not", "you agree", "you acknowledge", "you grant", "we reserve the right",
    "at any time", "sole discretion", "without notice", "in accordance with", "including but not limited to",
    "obligations", "provisions", "consent", "responsible", "responsibility", "your account", "the services",
    "our services", "distribute", "modify", "commercial use", "your content", "user content",
)  # fmt: skip
_SOFTWARE = (
    "python", "package", "library", "module", "modules", "install", "pip", "api", "framework", "plugin",
    "command-line", "command line", "cli", "wrapper", "implementation", "documentation", "github",
    "source code", "open source", "developers", "django", "json", "http", "async", "runtime", "dependencies",
    "parser", "sdk", "toolkit", "backend", "interface",
)  # fmt: skip
_PRODUCT = (
    "product", "made of", "made from", "material", "fabric", "cotton", "leather", "stainless steel", "size",
    "sizes", "color", "colour", "colors", "dimensions", "inches", "lightweight", "durable", "comfortable",
    "ideal for", "perfect for", "easy to use", "easy to clean", "package includes", "pack of", "brand",
    "battery", "rechargeable", "waterproof", "compatible with", "dishwasher safe", "gift",
)  # fmt: skip


def _vocabulary(words: Iterable[str]) -> re.Pattern[str]:
    longest_first = sorted(words, key=len, reverse=True)  # 'you may not' before 'you may'
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in longest_first) + r")\b", re.I)


_VOCABULARIES = {
    "clause": _vocabulary(_LEGAL),
    "software": _vocabulary(_SOFTWARE),
    "product": _vocabulary(_PRODUCT),
}
_WORD = re.compile(r"\w+(?:['\u2019-]\w+)*")


def marker_words(text: str, kind: str) -> list[str]:
    """The words of a kind's vocabulary ('clause', 'software', 'product') found in a text, lowercased."""
    return [m.group(1).lower() for m in _VOCABULARIES[kind].finditer(text)]


def _dense(text: str, kind: str) -> bool:
    """Enough of the vocabulary, and varied: one 'agreement' does not make a news story a contract."""
    found = marker_words(text, kind)
    words = len(_WORD.findall(text))
    return len(set(found)) >= MIN_VOCABULARY and 100 * len(found) / max(words, 1) >= MIN_DENSITY


def is_clause(text: str) -> bool:
    """Contract or terms wording: shall, party, liability, these terms, you may not, ..."""
    return _dense(text, "clause")


def is_software_description(text: str) -> bool:
    """What a package index or README says about a package: library, install, API, Python, ..."""
    return _dense(text, "software")


def is_product_description(text: str) -> bool:
    """What a shop says about a product: made of, size, color, ideal for, ..."""
    return _dense(text, "product")


# ------------------------------------------------------------------------------------------ news
# 'LONDON (Reuters) -', 'WASHINGTON, May 3 (AP) --', '(CNN) --', or a tabloid's 'By ... PUBLISHED:' line.
# Possessive (*+): a word is never split into several, which on a long run of capitals takes minutes.
_AGENCIES = r"Reuters|AP|AFP|CNN|CNN Money|Bloomberg|UPI|dpa|Xinhua|BBC"
_DATELINE = re.compile(
    rf"^\W{{0,3}}(?:[A-Z0-9][\w.'/-]*+[ ,]*+){{0,6}}\((?:{_AGENCIES})\)[ \t]*(?:-{{1,2}}|\u2013|\u2014)"
    r"|\b(?:PUBLISHED|UPDATED): "
)
_REPORTING = re.compile(
    r"\b(?:said|says|told|according to|reported|spokesman|spokeswoman|officials?)\b", re.I
)
# a sentence ends at . ! ? and a space (not after 'Mr.', 'Mrs.', 'U.S.', 'e.g.'), or at a line break
_SENTENCE_END = re.compile(
    r"(?<!\b[A-Z][a-z]\.)(?<!\bMrs\.)(?<!\b[A-Za-z]\.)(?<=[.!?])[\"'\u201d\u2019)]*\s+|\n+"
)
NEWS_MIN_WORDS = 150  # an article is long ...
NEWS_MIN_SENTENCES = 5  # ... prose of many sentences ...
NEWS_MIN_REPORTING = 2  # ... that reports: 'said', 'according to', 'officials'


def dateline(text: str) -> str | None:
    """The dateline a news text opens with ('LONDON (Reuters) -'), or None."""
    m = _DATELINE.search(text.lstrip()[:300])
    return m.group(0).strip() if m else None


def sentences(text: str) -> list[str]:
    """A text cut into sentences, at . ! ? and a space, and at line breaks."""
    return [s for s in (p.strip() for p in _SENTENCE_END.split(text.strip())) if re.search(r"\w", s)]


def is_news(text: str) -> bool:
    """A dateline, or long multi-sentence prose that reports (said, according to, officials)."""
    if dateline(text):
        return True
    long = len(_WORD.findall(text)) >= NEWS_MIN_WORDS and len(sentences(text)) >= NEWS_MIN_SENTENCES
    return long and len(_REPORTING.findall(text)) >= NEWS_MIN_REPORTING


KINDS = tuple(KIND_NAMES)  # what kind_of can say; a tie between two goes to the earlier


def kind_of(text: str) -> str | None:
    """The kind one text shows, or None. Structure first (turns, a dateline, long reporting), then vocabulary:
    a story on a lawsuit is news however often it says 'liability'; contracts do not report what was said."""
    if is_dialogue(text):
        return "dialogue"
    if is_news(text):
        return "news"
    return next((kind for kind in _VOCABULARIES if _dense(text, kind)), None)


# ------------------------------------------------------------------------------------------ the proposal
@dataclass(frozen=True)
class InstructionProposal:
    """The model.instruction proposed for a data set, the kind of text it read, and why."""

    kind: str
    instruction: str
    why: str
    length: str = ONE


def _texts(values: Iterable[Any]) -> list[str]:
    return [v for v in values if isinstance(v, str) and v.strip()]


def sample(values: Sequence[Any], limit: int = SAMPLE_ROWS) -> list[str]:
    """At most `limit` filled texts spread evenly over the file: a file sorted by kind still shows its mix."""
    texts = _texts(values)
    step = max(1, -(-len(texts) // limit))
    return texts[::step][:limit]


def summary_length(summaries: Sequence[str]) -> tuple[str, str]:
    """ONE when most summaries are a single sentence, else FEW; and the evidence, for the why."""
    counts = [len(sentences(s)) or 1 for s in summaries]
    if not counts:
        return ONE, "no summaries to measure"
    single = sum(1 for c in counts if c == 1)
    if statistics.median(counts) <= 1:
        return ONE, f"{single} of {len(counts)} summaries are one sentence"
    return FEW, f"summaries run to {statistics.median(counts):g} sentences on the median"


def _evidence(kind: str, hits: list[str]) -> str:
    """What made the kind, the most common first: speaker tags, datelines, or vocabulary."""
    if kind == "dialogue":
        tags = Counter(t for text in hits for t in dict.fromkeys(speaker_turns(text)))
        return "speaker turns like " + ", ".join(f"'{t}:'" for t, _ in tags.most_common(2))
    if kind == "news":
        lines = Counter(d for d in map(dateline, hits) if d)
        prose = "long multi-sentence reporting ('said', 'according to')"
        if not lines:
            return prose
        dated = f"a dateline like '{lines.most_common(1)[0][0]}'"
        return dated if lines.total() == len(hits) else f"{dated} or {prose}"
    words = Counter(w for text in hits for w in dict.fromkeys(marker_words(text, kind)))
    return "wording like " + ", ".join(f"'{w}'" for w, _ in words.most_common(3))


def propose_instruction(texts: Sequence[Any], summaries: Sequence[Any] = ()) -> InstructionProposal:
    """The instruction for this data: the kind most rows show (at least MIN_SHARE of them), else generic."""
    rows = sample(texts)
    length, length_why = summary_length(sample(summaries))
    kinds = [kind_of(t) for t in rows]
    counts = Counter(k for k in kinds if k is not None)
    if counts:
        kind, shown = max(counts.items(), key=lambda kv: (kv[1], -KINDS.index(kv[0])))
        if shown >= MIN_SHARE * len(rows):
            hits = [t for t, k in zip(rows, kinds, strict=True) if k == kind]
            why = (
                f"the texts read as {KIND_NAMES[kind]}: {shown} of {len(rows)} rows have "
                f"{_evidence(kind, hits)}; {length_why}"
            )
            return InstructionProposal(kind, INSTRUCTIONS[kind][length], why, length)
    if not rows:
        what = "no texts to read"
    elif counts:
        seen = ", ".join(f"{KIND_NAMES[k]} {counts[k]}" for k in KINDS if counts[k])
        what = f"no kind of text in most rows ({seen} of {len(rows)})"
    else:
        what = f"none of {len(rows)} rows reads as dialogue, news, a clause or a description"
    why = f"{what}: a generic instruction, edit it to name your texts; {length_why}"
    return InstructionProposal(GENERIC, INSTRUCTIONS[GENERIC][length], why, length)
