"""Where training runs and how: device choice, mixed precision, memory format, loader workers.

``--device auto|cpu|cuda|mps`` (``cli/options.device_option``; ``$EDGECTL_DEVICE`` is
that option's default, read by click and nowhere else) ends here. ``auto`` picks CUDA,
then Apple's MPS, then the CPU. The device is a parameter all the way down:
``BuildConfig.device``, ``StudyConfig.device``, ``training.train/fine_tune/fine_tune_hook``
(``device=``); no process-wide state. Training returns the model on the CPU: pruning,
export and evaluation never see the accelerator.

Per device (:func:`plan`):
- CUDA: ``torch.autocast`` in bfloat16 where the GPU supports it (Ampere and newer; no
  loss scaling needed), else float16 with ``torch.amp.GradScaler``; ``channels_last``
  (NHWC is what cuDNN's tensor-core convolutions want under AMP); loader workers on the
  spare cores with pinned memory, so batches are prepared while the GPU computes.
- MPS: float32, contiguous, one worker per spare core (up to 4).
- CPU: float32, no workers (frames are cached in memory and the transforms are cheap: a
  worker process would only take a core from the training threads), memory format by
  measurement: :data:`CPU_CHANNELS_LAST` (benchmarks/results/compute.md).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_common.cpuinfo import cores, cpu_model, isa_flags
from edge_common.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")

# Measured with benchmarks/bench_compute.py (results/compute.md): on the CPU, MobileNetV2
# training in channels_last vs contiguous, same run, AVX-512 and AVX2 dispatch.
CPU_CHANNELS_LAST = True

__all__ = ["CPU_CHANNELS_LAST", "DEVICES", "Plan", "banner", "cores", "cpu_model",
           "describe", "isa_flags", "load_average", "plan", "resolve"]


def _check(spec: str) -> str:
    spec = (spec or "auto").strip().lower()
    if spec.split(":")[0] not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {spec!r}")
    return spec


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve(spec: str | torch.device | None = None) -> torch.device:
    """The ``torch.device`` for ``spec`` (default ``auto``).

    ``auto``: CUDA if ``torch.cuda.is_available()``, then MPS, then CPU. Asking for a device
    this machine does not have is a ``ConfigError`` (fail closed: never silently train on
    something else than what was asked).
    """
    import torch

    if isinstance(spec, torch.device):
        return spec
    spec = _check(spec or "auto")
    kind = spec.split(":")[0]
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device here (torch.cuda.is_available() is "
                          f"False; torch {torch.__version__}, built for CUDA "
                          f"{torch.version.cuda or 'none'})")
    if kind == "mps" and not _mps_available():
        raise ConfigError("--device mps: Apple's Metal backend is not available here")
    return torch.device(spec)


@dataclass(frozen=True)
class Plan:
    """How :func:`training.fit` runs on one device."""

    device: Any  # torch.device
    amp_dtype: Any  # torch.float16 | torch.bfloat16 | None (float32)
    channels_last: bool
    workers: int
    pin_memory: bool

    @property
    def scaled(self) -> bool:
        """float16 needs loss scaling (GradScaler); bfloat16 has float32's range."""
        import torch

        return self.amp_dtype is torch.float16

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """``torch.autocast`` around forward + loss when mixed precision is on."""
        import torch

        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> Any:
        """``torch.amp.GradScaler`` (a pass-through when disabled: same code on every device)."""
        import torch

        return torch.amp.GradScaler(self.device.type if self.scaled else "cpu",
                                    enabled=self.scaled)

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.device),
                "precision": str(self.amp_dtype).replace("torch.", "") + " mixed"
                if self.amp_dtype is not None else "float32",
                "channels_last": self.channels_last, "workers": self.workers}


def plan(device: str | torch.device | None = None, channels_last: bool | None = None,
         amp: bool = True) -> Plan:
    """The training plan for ``device`` (see the module docstring); ``channels_last`` and
    ``amp=False`` override the device's defaults."""
    import torch

    dev = resolve(device)
    spare = max(0, cores() - 1)
    if dev.type == "cuda":
        amp_dtype = None
        if amp:
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        cl = True if channels_last is None else channels_last
        return Plan(dev, amp_dtype, cl, min(8, spare), True)
    if dev.type == "mps":
        return Plan(dev, None, bool(channels_last), min(4, spare), False)
    cl = CPU_CHANNELS_LAST if channels_last is None else channels_last
    return Plan(dev, None, cl, 0, False)


def load_average() -> str:
    """``1.81 1.37 0.76`` (1, 5, 15 min), or ``n/a``: printed beside timings on shared hosts."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def describe(device: str | torch.device | None = None) -> dict[str, Any]:
    """Device name, CPU model, ISA flags, torch's kernel dispatch level, threads, cores."""
    import torch

    dev = resolve(device)
    name = cpu_model()
    if dev.type == "cuda":
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(idx)
    elif dev.type == "mps":
        name = "Apple Metal (MPS)"
    return {
        "device": str(dev),
        "name": name,
        "cpu": cpu_model(),
        "isa": isa_flags(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "threads": torch.get_num_threads(),
        "cores": cores(),
    }


def banner(device: str | torch.device | None = None) -> str:
    """One line for the start of a long command: what it runs on."""
    d = describe(device)
    isa = ", ".join(d["isa"][:3]) or "no vector ISA flags"
    dispatch = d["torch_cpu_capability"]
    if d["onednn_max_isa"]:
        dispatch += f", oneDNN ≤ {d['onednn_max_isa']}"
    where = d["device"] if d["device"] == "cpu" else f"{d['device']} ({d['name']})"
    return (f"compute: {where}; CPU {d['cpu']} ({isa}; torch dispatch {dispatch}), "
            f"{d['threads']} threads on {d['cores']} cores")
