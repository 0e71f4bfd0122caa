"""One provision/destroy at a time per stack home; a stale lock is explained, and removable on request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from steep.stack.contract import StackError
from steep.stack.lock import locked


def test_lock_is_exclusive_and_a_stale_one_is_explained(stack_home: Path) -> None:
    with locked(stack_home):
        child = subprocess.run(
            [sys.executable, "-c", f"from steep.stack.lock import locked; from pathlib import Path\n"
             f"with locked(Path({str(stack_home)!r})): pass"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert child.returncode != 0 and f"(pid {os.getpid()}) is working on" in child.stderr
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (stack_home / "stack.lock").write_text(str(dead.pid))
    with (
        pytest.raises(StackError, match=r"stale lock .* rerun with --force-unlock"),
        locked(stack_home),
    ):
        pass
    with locked(stack_home, force_unlock=True):
        assert (stack_home / "stack.lock").read_text() == str(os.getpid())
    assert not (stack_home / "stack.lock").exists()
