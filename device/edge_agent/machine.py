"""What the board is: CPU model, cores, governor, temperature, throttling, runtimes.

Everything is read from ``/proc`` and ``/sys`` where the board exposes it (and
``vcgencmd get_throttled`` on a Raspberry Pi); anything missing is ``None``.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from edge_common.cpuinfo import cpu_model

__all__ = ["cpu_model", "describe", "governor", "runtime_versions", "temperature_c",
           "throttled"]


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def governor() -> str | None:
    return _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def temperature_c() -> float | None:
    """The hottest thermal zone in °C (SoC on a Pi or Jetson), or None."""
    temps = []
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        raw = _read(str(zone / "temp"))
        if raw and raw.lstrip("-").isdigit():
            temps.append(int(raw) / 1000.0)
    return round(max(temps), 1) if temps else None


def throttled() -> str | None:
    """``vcgencmd get_throttled`` (e.g. ``0x0``; non-zero bits = under-voltage/throttling)."""
    exe = shutil.which("vcgencmd")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=2)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().partition("=")[2] or None


def runtime_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key, dist in (
        ("onnxruntime", "onnxruntime"),
        ("litert", "ai-edge-litert"),
        ("tflite_runtime", "tflite-runtime"),
        ("numpy", "numpy"),
    ):
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[key] = None
    return out


def describe() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "governor": governor(),
        "temperature_c": temperature_c(),
        "throttled": throttled(),
        "python": platform.python_version(),
        "runtimes": runtime_versions(),
    }
