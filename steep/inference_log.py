"""The inference log: what the server saw, the input of drift monitoring.

One JSON line per summarized text, in daily files `<home>/inference/YYYY-MM-DD.jsonl`. Full texts are kept
only when `serving.log_texts: true`; otherwise a row holds statistics and salted hashes of its distinct words,
which is enough for the drift check (lengths, vocabulary shift, PII flags) without keeping what users sent.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from steep.config import SteepConfig
from steep.pii import EMAIL, PHONE

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
        return cls(cfg.home / "inference", salt=cfg.project.name)

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
            frames.append(pd.read_json(path, lines=True, dtype=False, convert_dates=False))
        if not frames:
            return pd.DataFrame(columns=COLUMNS)
        rows = pd.concat(frames, ignore_index=True)
        ts = pd.to_datetime(rows["ts"], utc=True, format="ISO8601")
        return rows[(ts >= start) & (ts < until)].reset_index(drop=True)
