"""The stack layer: `steep provision` / `steep destroy` over Terraform, and the stack contract.

The rest of steep only needs `current(cfg)`: the provisioned services (or None: use the embedded default),
and `reachable(stack)`: them as this machine reaches them (port-forwards on a cloud: stack/port_forward.py).
"""

from __future__ import annotations

from steep.stack.contract import CONTRACT, Stack, StackError
from steep.stack.port_forward import reachable
from steep.stack.record import current

__all__ = ["CONTRACT", "Stack", "StackError", "current", "reachable"]
