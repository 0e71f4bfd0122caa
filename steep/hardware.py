"""What this machine offers for training and generation: its CPU, and which precision runs fast on it.

bf16 is several times faster than fp32 only where the hardware does it natively (a GPU; a CPU with AVX512-BF16
or AMX); elsewhere it is emulated and slower, so `precision: auto` means fp32 there.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo() -> str:
    try:
        return CPUINFO.read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    """The CPU's model name (lscpu's 'Model name'; platform.processor() is often empty on Linux)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls several times faster than fp32 (else bf16 is emulated, and slower)."""
    flags = _cpuinfo()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 where the hardware does it natively, else fp32; an explicit choice stays."""
    import torch

    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def describe(device: torch.device, threads: int | None = None) -> str:
    """The device a run computes on, in words: 'Intel(R) Xeon(R) Processor, 2 threads, no native bf16'."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = threads or torch.get_num_threads() or os.cpu_count() or 1
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return f"{cpu_name()}, {threads} thread{'s' if threads > 1 else ''}, {bf16}"
