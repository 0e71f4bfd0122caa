"""The layers contract in pyproject.toml holds, and it covers every module of steep."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp  # import-linter's graph builder

import steep

REPO = Path(__file__).resolve().parents[1]


def contract_layers() -> list[set[str]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "layers"]
    return [{m for m in re.split(r"[\s:|]+", layer) if m} for layer in contract["layers"]]


def test_every_steep_module_has_a_layer():
    """A new module of steep must be placed in a layer, or the contract would not check it."""
    listed = set().union(*contract_layers())
    children = {f"steep.{m.name}" for m in pkgutil.iter_modules(steep.__path__)}
    assert children - listed == set(), "add these to a layer of [tool.importlinter] in pyproject.toml"


def test_imports_run_one_way():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]


def test_no_import_cycle_between_files():
    """Every module can be read before the ones that import it (a cycle hides which comes first)."""
    graph = grimp.build_graph("steep")
    cycles = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.find_shortest_chain(importer=imported, imported=module):
                cycles.add(tuple(sorted((module, imported))))
    assert cycles == set(), f"import cycles: {sorted(cycles)}"
