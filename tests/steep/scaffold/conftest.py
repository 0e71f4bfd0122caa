"""Data files for the `steep init` tests (and tests/cli/test_init.py): made-up rows with the names and
shapes of real summarization sets, and a check that a written steep.yaml loads to the expected config."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from steep.config import SteepConfig, anchor_paths, load_config

WORDS = [
    *["the", "agreement", "party", "shall", "notify", "court", "company", "contract", "term", "service"],
    *["user", "data", "may", "not", "use", "any", "law", "right", "notice", "breach", "account", "privacy"],
    *["license", "content", "provide", "terminate"],
]


def prose(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def legal_records(n: int = 24, seed: int = 0) -> list[dict]:
    """Like the upstream legal set: uid, doc (several clauses each), original_text, reference_summary."""
    rng = random.Random(seed)
    return [
        {
            "uid": f"legalsum{i:02d}",
            "doc": f"Terms of Service {i // 4}",
            "original_text": prose(rng, 60, 120),
            "reference_summary": prose(rng, 6, 14),
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_news_csv(path: Path, n: int = 40, outlets: int = 4, seed: int = 1) -> Path:
    """Other names than the legal set: article_id (unique), source (outlet, repeated), article, highlights."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["article_id", "source", "url", "article", "highlights"])
        writer.writeheader()
        for i in range(n):
            writer.writerow(
                {
                    "article_id": f"a{i:03d}",
                    "source": f"outlet{i % outlets}",
                    "url": f"https://news.example/{i}",
                    "article": prose(rng, 80, 140),
                    "highlights": prose(rng, 8, 15),
                }
            )
    return path


def assert_loads_to(path: Path, expected: SteepConfig) -> None:
    """load_config gives exactly `expected`, with relative paths anchored at the file's folder as it does."""
    cfg = load_config(path, environ={})
    assert cfg.model_dump() == anchor_paths(expected, path.parent).model_dump()
    assert cfg.root == path.parent
