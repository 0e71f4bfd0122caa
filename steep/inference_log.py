"""The inference log: what the server saw, the input of drift monitoring.

One JSON line per summarized text, in daily files `<home>/inference/YYYY-MM-DD.jsonl`. Full texts are kept
only when `serving.log_texts: true`; otherwise a row holds statistics and salted hashes of its distinct words,
which is enough for the drift check (lengths, vocabulary shift, PII flags) without keeping what users sent.

The hashes are only private while the salt is secret: it is generated once per stack (`inference_salt`), kept
out of steep.yaml and the repository, and the drift check reads it the same way to hash its reference.

On a stack with object storage (a cloud's bucket: `inference_store`) the log's home is the store: a server
still appends to its local files first (a pod's emptyDir), and a `Shipper` thread copies what they gained to
`<store>/<day>/` in batches, off the request path; the drift check reads the window from the store. On the
local target (a file:// artifact store) the log stays under project.home as before.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import secrets
import socket
import tempfile
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from steep.config import SteepConfig
from steep.errors import SteepError
from steep.pii import EMAIL, PHONE
from steep.stack import current

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from steep.stack import Stack

SALT_ENV = "STEEP_INFERENCE_SALT"  # a pod gets the salt here, from a Kubernetes Secret
STORE_ENV = "STEEP_INFERENCE_STORE"  # a pod (server or flow run) gets the stack's store here
SHIP_INTERVAL_S = 60.0  # how often a server ships what its log gained: at most this much is only local
# the fsspec filesystem each object store needs, and the steep extra that installs it
STORE_EXTRAS = {"s3": "aws", "gs": "gcp", "gcs": "gcp", "az": "azure", "abfs": "azure"}
_AZURE = re.compile(
    r"^(?:wasbs?|abfss?)://(?P<container>[^@/]+)@(?P<account>[^./]+)\.(?:blob|dfs)\.core\.windows\.net"
    r"(?P<path>/.*)?$"
)
log = logging.getLogger("steep.inference_log")

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


# --------------------------------------------------------------------------------------------- the store
def inference_store(cfg: SteepConfig, stack: Stack | None) -> str | None:
    """The log's folder in the stack's object storage, beside MLflow's: `<bucket>/inference/<project>`.

    None with no stack or a local one (a file:// artifact store): the log stays under project.home.
    """
    uri = stack.artifact_uri if stack is not None else ""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme == "file":
        return None
    bucket, _, path = rest.partition("/")
    parent = path.strip("/").rpartition("/")[0]
    return "/".join(p for p in (f"{scheme}://{bucket}", parent, "inference", cfg.project.name) if p)


def open_store(uri: str) -> tuple[AbstractFileSystem, str]:
    """(fsspec filesystem, path) of a store URI: s3://, gs://, az:// / abfs:// (and Azure's wasbs:// form,
    as the Azure root exports it), file://, memory://; a missing filesystem package names its steep extra."""
    import fsspec

    options: dict[str, Any] = {}
    azure = _AZURE.match(uri)
    if azure:  # container@account.blob.core.windows.net: adlfs takes the account as an option
        uri = f"az://{azure['container']}{azure['path'] or ''}"
        options["account_name"] = azure["account"]
    scheme = uri.partition("://")[0]
    if scheme in ("file", "local"):  # object stores have no folders; a local one needs them made
        options["auto_mkdir"] = True
    try:
        fs, path = fsspec.core.url_to_fs(uri, **options)
    except ImportError as exc:
        extra = STORE_EXTRAS.get(scheme)
        how = f"pip install 'steep[{extra}]'" if extra else "install the fsspec filesystem for it"
        raise SteepError(
            f"the inference log's store {uri} needs a filesystem package ({exc}): {how}"
        ) from exc
    except ValueError as exc:
        raise SteepError(f"the inference log's store {uri} is not a location fsspec knows ({exc})") from None
    return fs, path.rstrip("/")


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One process at a time (the server's workers share the log folder)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Shipper:
    """Copies what the local daily files gained to the store in batches, on its own thread.

    A batch of one day's file is one object `<store>/<day>/<writer>-<offset>.jsonl`, named by the byte
    offset in the local file where it starts. The offset shipped so far is saved only after the upload
    succeeded, so a failed upload loses nothing (the next batch carries those rows too) and a repeated one
    overwrites the same object (no row twice). A past day's file is removed once all of it is shipped.
    Requests never wait on it: appends only write the local file.
    """

    STATE = ".shipped.json"
    LOCK = ".ship.lock"

    def __init__(self, root: Path, store: str, writer: str | None = None,
                 interval_s: float = SHIP_INTERVAL_S) -> None:  # fmt: skip
        self.root = Path(root)
        self.store = store
        self.writer = re.sub(r"[^A-Za-z0-9_.-]", "_", writer or socket.gethostname())  # the pod's name
        self.interval_s = interval_s
        self.failures = 0  # consecutive failed batches
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _state(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads((self.root / self.STATE).read_text()).items()}
        except (FileNotFoundError, ValueError):
            return {}

    def _save(self, state: dict[str, int]) -> None:
        tmp = self.root / f"{self.STATE}.tmp"
        tmp.write_text(json.dumps(state))
        tmp.replace(self.root / self.STATE)

    def ship(self) -> int:
        """Ship every whole line not shipped yet; -> rows shipped. Raises when the store refuses."""
        if not self.root.is_dir():
            return 0
        fs, base = open_store(self.store)
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        rows = 0
        with _exclusive(self.root / self.LOCK):
            state = self._state()
            for path in sorted(self.root.glob("*.jsonl")):
                done = state.get(path.name, 0)
                size = path.stat().st_size
                if size < done:  # the file was replaced under us: what it holds now is all new
                    done = 0
                with path.open("rb") as fh:
                    fh.seek(done)
                    data = fh.read(size - done)
                data = data[: data.rfind(b"\n") + 1]  # whole lines only; a line being written waits
                if data:
                    fs.pipe_file(f"{base}/{path.stem}/{self.writer}-{done:012d}.jsonl", data)
                    state[path.name] = done + len(data)
                    self._save(state)
                    rows += data.count(b"\n")
                if path.stem < today and state.get(path.name, 0) >= path.stat().st_size:
                    path.unlink()
                    state.pop(path.name, None)
                    self._save(state)
        return rows

    def tick(self) -> int:
        """One batch; a failure is logged and retried with the next batch, never raised."""
        try:
            rows = self.ship()
        except Exception as exc:
            self.failures += 1
            log.warning("could not ship the inference log to %s (%s: %s); its rows stay in %s and go with "
                        "the next batch", self.store, type(exc).__name__, exc, self.root)  # fmt: skip
            return 0
        self.failures = 0
        return rows

    def start(self) -> Shipper:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="steep-log-shipper", daemon=True)
            self._thread.start()
            atexit.register(self.stop)
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()
        self.tick()  # what came in since the last batch, on the way out

    def stop(self, timeout: float = 30.0) -> None:
        """Ship what is left and stop (a server's shutdown; also at interpreter exit)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


class InferenceLog:
    """Append-only daily JSONL files; appends from threads and processes do not interleave lines.

    With a `store`, appends are shipped there (`Shipper`) and `window` reads the store.
    """

    def __init__(self, root: Path, salt: str, store: str | None = None) -> None:
        self.root = Path(root)
        self.salt = salt
        self.store = store
        self._shipper: Shipper | None = None

    @classmethod
    def for_config(cls, cfg: SteepConfig, environ: Mapping[str, str] | None = None) -> InferenceLog:
        """The log of cfg's project with its stack's salt: the server and the drift check both open it so.

        Its store: $STEEP_INFERENCE_STORE (a pod's), else the provisioned stack's object storage, if any.
        """
        environ = os.environ if environ is None else environ
        store = environ.get(STORE_ENV, "").strip() or inference_store(cfg, current(cfg))
        return cls(cfg.home / "inference", salt=inference_salt(cfg, environ), store=store)

    @property
    def location(self) -> str:
        """Where `window` reads: the store, else the local folder."""
        return self.store or str(self.root)

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
            if self.store and self._shipper is None:
                self._shipper = Shipper(self.root, self.store).start()

    def close(self) -> None:
        """Ship what is left (a no-op without a store)."""
        if self._shipper is not None:
            self._shipper.stop()

    def window(self, since: datetime | timedelta, until: datetime | None = None) -> pd.DataFrame:
        """Rows logged in [since, until); `since` may be a duration back from now."""
        until = until or datetime.now(UTC)
        start = until - since if isinstance(since, timedelta) else since
        first_day = start.strftime("%Y-%m-%d")
        frames = [
            pd.read_json(io.BytesIO(blob), lines=True, dtype=False)  # no column is named like a date
            for blob in (self._store_blobs(first_day) if self.store else self._local_blobs(first_day))
            if blob.strip()
        ]
        if not frames:
            return pd.DataFrame(columns=COLUMNS)
        rows = pd.concat(frames, ignore_index=True)
        ts = pd.to_datetime(rows["ts"], utc=True, format="ISO8601")
        return rows[(ts >= start) & (ts < until)].reset_index(drop=True)

    def _local_blobs(self, first_day: str) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.root.glob("*.jsonl")) if p.stem >= first_day]

    def _store_blobs(self, first_day: str) -> list[bytes]:
        """Every shipped batch of the days from `first_day` on, fetched together."""
        assert self.store is not None
        fs, base = open_store(self.store)
        fs.invalidate_cache(base)  # a long-lived process must see batches shipped since it last looked
        try:
            days = fs.ls(base, detail=False)
        except FileNotFoundError:
            return []
        paths = []
        for day in days:
            if day.rstrip("/").rpartition("/")[2] >= first_day:
                paths += [p for p in fs.find(day) if p.endswith(".jsonl")]
        if not paths:
            return []
        blobs = fs.cat(paths)
        return [blobs[p] for p in sorted(blobs)]
