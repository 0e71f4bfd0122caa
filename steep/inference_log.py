"""The inference log: what the server saw, the input of drift monitoring.

One JSON line per summarized text, in daily files `<home>/inference/YYYY-MM-DD.jsonl`. Full texts are kept
only when `serving.log_texts: true`; otherwise a row holds statistics and salted hashes of its distinct words,
which is enough for the drift check (lengths, vocabulary shift, PII flags) without keeping what users sent.

The hashes are only private while the salt is secret: it is generated once per stack (`inference_salt`), kept
out of steep.yaml and the repository, and the drift check reads it the same way to hash its reference.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from steep.config import SteepConfig
from steep.errors import SteepError
from steep.pii import EMAIL, PHONE

SALT_ENV = "STEEP_INFERENCE_SALT"  # a pod gets the salt here, from a Kubernetes Secret

_WORD = re.compile(r"[a-z0-9']+")
_EMAIL = re.compile(EMAIL)
_PHONE = re.compile(PHONE)
_lock = threading.Lock()

COLUMNS = [
    "ts",
    "request_id",
    "model_name",
    "model_version",
    "run_id",
    "n_chars",
    "n_words",
    "summary_chars",
    "summary_words",
    "latency_ms",
    "blank",
    "has_email",
    "has_phone",
    "word_hashes",
    "text",
    "summary",
]


def words(text: str) -> list[str]:
    """The tokenization drift uses everywhere: lowercase runs of letters, digits and apostrophes."""
    return _WORD.findall(text.lower())


def hash_word(word: str, salt: str) -> str:
    return hashlib.blake2b(word.encode(), key=salt.encode()[:64], digest_size=5).hexdigest()


def salt_file(home: Path) -> Path:
    """Where a stack keeps its salt when the environment does not carry one."""
    return Path(home) / "secrets" / "inference-salt"


def inference_salt(cfg: SteepConfig, environ: Mapping[str, str] | None = None) -> str:
    """The secret key of the word hashes: $STEEP_INFERENCE_SALT, else the stack's salt file (made once).

    Not derived from anything in steep.yaml: whoever reads the config could otherwise hash a dictionary and
    read the logged words back.
    """
    environ = os.environ if environ is None else environ
    return environ.get(SALT_ENV, "").strip() or _read_or_create(salt_file(cfg.home))


def _read_or_create(path: Path) -> str:
    """Read the salt file, first writing a new random salt when there is none.

    The salt is written to a private temporary file (mode 0600) and hard-linked into place: a link never
    replaces an existing file, so of two processes starting at once the first one's salt is the salt of both,
    and nobody ever reads a half-written file.
    """
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        ignore = path.parent / ".gitignore"  # a project.home inside a repository must not publish it
        if not ignore.exists():
            ignore.write_text("*\n")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process was first: its salt is ours
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    salt = path.read_text().strip()
    if not salt:
        raise SteepError(
            f"the inference-log salt file {path} is empty: delete it to make a new salt "
            "(rows logged before cannot be compared with the new one's hashes)"
        )
    return salt


def record(
    text: str,
    summary: str,
    *,
    model_name: str,
    model_version: str,
    run_id: str,
    request_id: str,
    latency_ms: float,
    log_texts: bool,
    salt: str,
) -> dict[str, Any]:
    """One log row for one summarized text."""
    tokens = words(text)
    return {
        "ts": datetime.now(UTC).isoformat(),
        "request_id": request_id,
        "model_name": model_name,
        "model_version": str(model_version),
        "run_id": run_id,
        "n_chars": len(text),
        "n_words": len(tokens),
        "summary_chars": len(summary),
        "summary_words": len(words(summary)),
        "latency_ms": round(float(latency_ms), 2),
        "blank": not text.strip(),
        "has_email": bool(_EMAIL.search(text)),
        "has_phone": bool(_PHONE.search(text)),
        "word_hashes": sorted({hash_word(w, salt) for w in tokens}),
        "text": text if log_texts else None,
        "summary": summary if log_texts else None,
    }


class InferenceLog:
    """Append-only daily JSONL files; appends from threads and processes do not interleave lines."""

    def __init__(self, root: Path, salt: str) -> None:
        self.root = Path(root)
        self.salt = salt

    @classmethod
    def for_config(cls, cfg: SteepConfig) -> InferenceLog:
        """The log of cfg's project with its stack's salt: the server and the drift check both open it so."""
        return cls(cfg.home / "inference", salt=inference_salt(cfg))

    def append(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        payload = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode()
        with _lock:
            fd = os.open(self.root / f"{day}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, payload)  # one write of whole lines: O_APPEND keeps processes from interleaving
            finally:
                os.close(fd)

    def window(self, since: datetime | timedelta, until: datetime | None = None) -> pd.DataFrame:
        """Rows logged in [since, until); `since` may be a duration back from now."""
        until = until or datetime.now(UTC)
        start = until - since if isinstance(since, timedelta) else since
        frames = []
        for path in sorted(self.root.glob("*.jsonl")):
            if path.stem < start.strftime("%Y-%m-%d"):
                continue
            frames.append(pd.read_json(path, lines=True, dtype=False))  # no column is named like a date
        if not frames:
            return pd.DataFrame(columns=COLUMNS)
        rows = pd.concat(frames, ignore_index=True)
        ts = pd.to_datetime(rows["ts"], utc=True, format="ISO8601")
        return rows[(ts >= start) & (ts < until)].reset_index(drop=True)
