"""The stack layer: `steep provision` / `steep destroy` over Terraform, and the stack contract.

The rest of steep only needs `current(cfg)`: the provisioned services (or None: use the embedded default).
Imports are lazy so `python -m steep.stack.daemons` (run by Terraform) loads only what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from steep.stack.core import CONTRACT, Stack, StackError, current

__all__ = ["CONTRACT", "Stack", "StackError", "current"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from steep.stack import core

        return getattr(core, name)
    raise AttributeError(name)
