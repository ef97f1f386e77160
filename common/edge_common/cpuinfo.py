"""What CPU this is: model name and the vector ISA flags that decide kernel speed.

Read from ``/proc/cpuinfo`` where the OS has one (Linux, on x86 and ARM boards), else from
``platform``. Shared by the board's ``edge_agent.machine`` and the host's
``edgectl.pipeline.compute``, so both print the same name beside their timings.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# The flags that change which kernels torch, oneDNN and onnxruntime pick, fastest first.
ISA_FLAGS = ("amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2", "fma",
             "sve", "asimddp", "asimd", "neon")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _fields(text: str) -> dict[str, str]:
    """The first value of each ``key : value`` line (the first core's block)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model(cpuinfo: str | None = None) -> str:
    """``AMD EPYC 9654``, ``Raspberry Pi 4 Model B Rev 1.5``, ... (never empty)."""
    fields = _fields((_read("/proc/cpuinfo") or "") if cpuinfo is None else cpuinfo)
    # x86: "model name"; Raspberry Pi: "Model"; other ARM: "Hardware" or the device tree.
    model = fields.get("model name") or fields.get("Model") or fields.get("Hardware")
    dt = _read("/proc/device-tree/model") if cpuinfo is None else None
    return (model or (dt.rstrip("\x00") if dt else None) or platform.processor()
            or platform.machine() or "unknown CPU")


def isa_flags(cpuinfo: str | None = None) -> list[str]:
    """The :data:`ISA_FLAGS` this CPU has (x86 ``flags``, ARM ``Features``), fastest first."""
    fields = _fields((_read("/proc/cpuinfo") or "") if cpuinfo is None else cpuinfo)
    have = set((fields.get("flags") or fields.get("Features") or "").split())
    return [f for f in ISA_FLAGS if f in have]


def cores() -> int:
    """CPUs this process may run on (the affinity mask, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
