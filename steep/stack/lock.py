"""One provision/destroy at a time per stack home: a lock file holding the pid of its owner."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import psutil

from steep.stack.contract import StackError


@contextlib.contextmanager
def locked(home: Path, force_unlock: bool = False) -> Iterator[None]:
    """Hold the lock of `home` for the block; a lock whose process is gone is reported as stale."""
    home.mkdir(parents=True, exist_ok=True)
    lock = home / "stack.lock"
    if force_unlock:
        lock.unlink(missing_ok=True)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            pid = int(lock.read_text().strip() or 0)
        except (ValueError, FileNotFoundError):
            pid = 0
        if pid and psutil.pid_exists(pid) and pid != os.getpid():
            raise StackError(
                f"another steep provision/destroy (pid {pid}) is working on {home}; wait for it"
            ) from None
        raise StackError(
            f"stale lock {lock} (left by pid {pid or '?'}, which is no longer running); "
            "rerun with --force-unlock to remove it"
        ) from None
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
