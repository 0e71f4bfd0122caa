"""The remote state backend file: written only with stack.backend_config, and only with a state lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from steep.stack.backend import write_backend
from steep.stack.contract import StackError


def test_remote_backend_needs_locking_and_is_written(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="dynamodb_table"):
        write_backend(tmp_path, "aws", {"bucket": "b", "key": "k"})
    write_backend(tmp_path, "gcp", {"bucket": "b", "prefix": "steep"})
    assert 'backend "gcs" {}' in (tmp_path / "steep_backend.tf").read_text()
    write_backend(tmp_path, "gcp", {})
    assert not (tmp_path / "steep_backend.tf").exists()
    with pytest.raises(StackError, match="local target keeps its state"):
        write_backend(tmp_path, "local", {"bucket": "b"})
