"""Data: resolve `data.source`, read it, map columns to one canonical table, split it without leakage.

The canonical table has exactly the columns ``id, group, text, summary``; every later stage reads only that.
Digests are content hashes of the canonical rows, so a model version can name the exact data it saw.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from steep.config import DataConfig, SplitConfig, SteepConfig, is_url
from steep.errors import SteepError

CANONICAL_COLUMNS = ["id", "group", "text", "summary"]
SPLITS = ("train", "validation", "test")
_SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class DataError(SteepError):
    """The data source cannot be read or does not fit the column mapping."""


@dataclass(frozen=True)
class Dataset:
    frame: pd.DataFrame
    digest: str
    source: str
    path: Path


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    digests: dict[str, str]

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        return [(name, getattr(self, name)) for name in SPLITS]


# --------------------------------------------------------------------------------------------- source
def cache_path(cfg: SteepConfig) -> Path:
    """Where a URL source is cached: one folder per URL, the file keeps its upstream name."""
    url = cfg.data.source
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    name = Path(urlparse(url).path).name or "data"
    return cfg.home / "cache" / "data" / key / name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_sha(path: Path, expected: str | None, what: str) -> None:
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(
            f"{what}: sha256 is {actual}, but data.sha256 expects {expected}. "
            "Use the right file, or update data.sha256 if the source changed on purpose."
        )


def seed_cache(cfg: SteepConfig, file: str | Path) -> Path:
    """Put a local copy of the configured URL into the cache (the offline path), checksum verified."""
    if not is_url(cfg.data.source):
        raise DataError(f"data.source is a local path ({cfg.data.source}); only URL sources use the cache")
    src = Path(file)
    if not src.is_file():
        raise DataError(f"{src}: no such file to seed the cache with")
    _check_sha(src, cfg.data.sha256, str(src))
    dest = cache_path(cfg)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest


def _download(url: str, dest: Path, expected_sha: str | None, seed_hint: str) -> None:
    import httpx

    tmp = dest.with_suffix(dest.suffix + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=30) as resp:
            resp.raise_for_status()
            with tmp.open("wb") as f:
                for chunk in resp.iter_bytes():
                    f.write(chunk)
    except httpx.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"could not download {url} ({exc.__class__.__name__}: {exc}). {seed_hint}") from exc
    try:
        _check_sha(tmp, expected_sha, f"download of {url}")
    except DataError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(dest)


def resolve_source(cfg: SteepConfig) -> Path:
    """A local file as is; a URL from the cache, downloading it once if needed."""
    source = cfg.data.source
    if not is_url(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(
                f"data.source: {source}: no such file (a relative path is read from the folder of "
                f"steep.yaml, {cfg.root}). Point data.source at an existing file or URL."
            )
        if path.is_dir():
            raise DataError(
                f"data.source: {source} is a folder; point it at one JSONL, JSON, CSV or Parquet file"
            )
        return path
    dest = cache_path(cfg)
    seed_hint = (
        f"Offline? Seed the cache with a copy of that file: `steep data seed PATH/TO/{dest.name}` "
        f"(it is checked against data.sha256 and stored as {dest}), or set data.source to a local file."
    )
    if dest.exists():
        _check_sha(dest, cfg.data.sha256, f"cached copy {dest}")
        return dest
    _download(source, dest, cfg.data.sha256, seed_hint)
    return dest


# --------------------------------------------------------------------------------------------- reading
def detect_format(path: Path, configured: str) -> str:
    if configured != "auto":
        return configured
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
            f"set data.format to one of jsonl, json, csv, parquet"
        )
    return fmt


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}, line {line}). "
            "Re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`."
        ) from exc


def _records_from_json(obj: object, path: Path) -> list[dict]:
    if isinstance(obj, list):
        records = obj
    elif isinstance(obj, dict) and obj and all(isinstance(v, dict) for v in obj.values()):
        # an object of records keyed by id, like the upstream legal file (all_v1.json)
        records = [{"_key": key, **value} for key, value in obj.items()]
    else:
        raise DataError(
            f"{path}: JSON must be a list of records or an object of records keyed by id, "
            f"got {type(obj).__name__}"
        )
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise DataError(f"{path}: record {bad} is a {type(records[bad]).__name__}, not an object")
    return records


def read_table(path: Path, fmt: str) -> pd.DataFrame:
    """Read any supported file into a raw DataFrame, with errors that say where the file is broken."""
    if fmt == "parquet":
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several unrelated types for a broken file
            raise DataError(
                f"{path}: not a readable Parquet file ({exc}). Check the file or data.format."
            ) from exc
    text = _decode(path)
    if fmt == "jsonl":
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}: line {lineno} is not valid JSON ({exc.msg} at column {exc.colno}). "
                    "Each line of a JSONL file must be one JSON object."
                ) from exc
            if not isinstance(record, dict):
                raise DataError(f"{path}: line {lineno} is a {type(record).__name__}, not a JSON object")
            records.append(record)
        return pd.DataFrame.from_records(records)
    if fmt == "json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}). "
                "If it holds one object per line, set data.format: jsonl."
            ) from exc
        return pd.DataFrame.from_records(_records_from_json(obj, path))
    if fmt == "csv":
        try:
            return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DataError(f"{path}: not a readable CSV file ({exc})") from exc
    raise DataError(f"data.format: unknown format {fmt!r}")


def to_canonical(raw: pd.DataFrame, data: DataConfig, where: str) -> pd.DataFrame:
    """Map the configured columns to id, group, text, summary."""
    if raw.empty:
        raise DataError(f"{where}: the dataset is empty (0 rows). Point data.source at a file with examples.")
    columns = list(raw.columns)
    wanted = {
        "data.text_column": data.text_column,
        "data.summary_column": data.summary_column,
        "data.id_column": data.id_column,
        "data.group_column": data.group_column,
    }
    if data.id_column is not None and data.id_column not in columns and "_key" in columns:
        wanted["data.id_column"] = None  # records keyed by id: the key is the id
    missing = [f"{key}: {col!r}" for key, col in wanted.items() if col is not None and col not in columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {'; '.join(missing)}. The file has: {', '.join(map(str, columns))}. "
            "Fix the column mapping in the data section."
        )

    def column(col: str | None, fallback: pd.Series) -> pd.Series:
        return raw[col] if col is not None else fallback

    ids = column(wanted["data.id_column"], raw["_key"] if "_key" in columns else pd.Series(range(len(raw))))
    out = pd.DataFrame(
        {
            "id": ids.astype(str).to_numpy(),
            "group": column(data.group_column, ids).astype(str).to_numpy(),
            "text": raw[data.text_column].to_numpy(),
            "summary": raw[data.summary_column].to_numpy(),
        }
    )
    for col in ("text", "summary"):
        out[col] = out[col].map(lambda v: v if isinstance(v, str) else (None if pd.isna(v) else str(v)))
    return out


def frame_digest(frame: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for row in frame[CANONICAL_COLUMNS].itertuples(index=False):
        h.update(json.dumps(list(row), ensure_ascii=False, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def load_dataset(cfg: SteepConfig) -> Dataset:
    path = resolve_source(cfg)
    fmt = detect_format(path, cfg.data.format)
    frame = to_canonical(read_table(path, fmt), cfg.data, str(path))
    return Dataset(frame=frame, digest=frame_digest(frame), source=cfg.data.source, path=path)


# --------------------------------------------------------------------------------------------- split
def split_dataset(frame: pd.DataFrame, split: SplitConfig, seed: int) -> Splits:
    """Group-aware split: each group goes whole into one split, filling each split to its fraction.

    Groups are visited largest first (ties in a seeded random order) and each goes to the split furthest below
    its target row count, so the fractions come out close even when a few groups hold most rows.
    """
    fractions = {"train": split.train, "validation": split.validation, "test": split.test}
    needed = [name for name, frac in fractions.items() if frac > 0]
    sizes = frame.groupby("group", sort=True).size()
    if len(sizes) < len(needed):
        raise DataError(
            f"only {len(sizes)} distinct group value(s) for {len(needed)} non-empty splits; every group goes "
            "to one split. Use a finer data.group_column, or set it to null to split by row."
        )
    groups = list(sizes.index)
    random.Random(seed).shuffle(groups)
    groups.sort(key=lambda g: -int(sizes[g]))  # stable: equal sizes keep their seeded order
    total = len(frame)
    counts = dict.fromkeys(fractions, 0)
    assigned: dict[str, str] = {}
    for i, group in enumerate(groups):
        empty = [n for n in needed if counts[n] == 0]
        if len(groups) - i <= len(empty):  # just enough groups left to give every split one
            name = empty[0]
        else:
            name = max(needed, key=lambda n: fractions[n] * total - counts[n])
        assigned[group] = name
        counts[name] += int(sizes[group])
    parts = {
        name: frame[frame["group"].map(assigned) == name].sort_values("id").reset_index(drop=True)
        for name in fractions
    }
    splits = Splits(**parts, digests={name: frame_digest(part) for name, part in parts.items()})
    check_no_leakage(splits)
    return splits


def check_no_leakage(splits: Splits) -> None:
    """Raise if any group value or id appears in two splits."""
    seen: dict[str, str] = {}
    seen_ids: dict[str, str] = {}
    for name, part in splits.items():
        for group in part["group"].unique():
            if group in seen and seen[group] != name:
                raise DataError(f"leakage: group {group!r} is in both {seen[group]} and {name}")
            seen[group] = name
        for row_id in part["id"]:
            if row_id in seen_ids:
                raise DataError(f"leakage: id {row_id!r} is in both {seen_ids[row_id]} and {name}")
            seen_ids[row_id] = name
