"""steep.hardware: the precision `auto` picks follows the CPU's flags, and the device is named in words."""

from __future__ import annotations

import pytest
import torch

from steep import hardware
from steep.hardware import describe, resolve_precision

SAPPHIRE = (
    "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 avx512f amx_bf16\n"
)
EPYC = "processor\t: 0\nmodel name\t: AMD EPYC 7R13 Processor\nflags\t\t: fpu avx2 avx512f\n"


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    def use(text: str) -> None:
        (tmp_path / "cpuinfo").write_text(text)
        monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "cpuinfo")

    return use


@pytest.mark.parametrize(("text", "native", "auto"), [(SAPPHIRE, True, "bf16"), (EPYC, False, "fp32")])
def test_auto_precision_follows_the_cpu_flags(cpuinfo, text, native, auto):
    cpuinfo(text)
    cpu = torch.device("cpu")
    assert hardware.cpu_has_native_bf16() is native
    assert resolve_precision("auto", cpu) == auto
    assert resolve_precision("bf16", cpu) == "bf16" and resolve_precision("fp32", cpu) == "fp32"


def test_the_device_is_named_with_its_threads_and_bf16(cpuinfo):
    cpuinfo(EPYC)
    assert describe(torch.device("cpu"), threads=2) == "AMD EPYC 7R13 Processor, 2 threads, no native bf16"
    cpuinfo(SAPPHIRE)
    assert (
        describe(torch.device("cpu"), threads=1) == "Intel(R) Xeon(R) Platinum 8480+, 1 thread, native bf16"
    )


def test_no_cpuinfo_means_no_native_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "missing")
    assert not hardware.cpu_has_native_bf16() and hardware.cpu_name()
