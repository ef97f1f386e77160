"""The one definition of preprocessing, used at evaluation on the host and on the board.

A frame is an ``H×W×3`` ``uint8`` array in the colour order given by the input spec's
``source_order`` argument (cameras deliver RGB or BGR). It is resized with Pillow's
bilinear filter (the same code path torchvision's ``Resize`` takes on PIL images, so
the host's test-time transform and the board agree bit for bit), scaled to [0, 1],
normalised with the spec's mean and std and laid out as the spec says.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from edge_common.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_SIZE = 4096  # input side, pixels
MIN_STD = 1e-6
MAX_NORM = 1e6


@dataclass(frozen=True)
class InputSpec:
    """What the model expects: square ``size`` pixels, colour order, layout, mean, std."""

    size: int = 64
    colour_order: str = "RGB"
    layout: str = "NCHW"
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not isinstance(self.size, numbers.Integral) or isinstance(self.size, bool):
            raise ConfigError(f"input.size must be an integer, got {self.size!r}")
        if not 1 <= self.size <= MAX_SIZE:
            raise ConfigError(f"input.size must be 1..{MAX_SIZE}, got {self.size}")
        if self.colour_order not in ("RGB", "BGR"):
            raise ConfigError(f"input.colour_order must be RGB or BGR, got {self.colour_order!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"input.layout must be NCHW or NHWC, got {self.layout!r}")
        if self.dtype != "float32":
            raise ConfigError(f"input.dtype must be float32, got {self.dtype!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError("input.mean and input.std must have 3 values")
        # A frame is scaled to [0, 1], then (x - mean) / std: a zero, tiny, negative or
        # non-finite std (or a huge mean) cannot give finite, meaningful inputs, and a
        # model fed inf/NaN scores NaN, which must never reach a decision.
        for name, values in (("mean", self.mean), ("std", self.std)):
            for v in values:
                if (not isinstance(v, numbers.Real) or isinstance(v, bool)
                        or not math.isfinite(v)):
                    raise ConfigError(f"input.{name} must hold 3 finite numbers, got {v!r}")
        if not all(MIN_STD <= v <= MAX_NORM for v in self.std):
            raise ConfigError(f"input.std must be within [{MIN_STD}, {MAX_NORM:g}] (finite "
                              f"inputs), got {list(self.std)}")
        if not all(abs(v) <= MAX_NORM for v in self.mean):
            raise ConfigError(f"input.mean must be within ±{MAX_NORM:g}, got {list(self.mean)}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        if not isinstance(d, dict):
            raise ConfigError(f"input must be an object, got {type(d).__name__}")
        known = {"size", "colour_order", "layout", "mean", "std", "dtype"}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"input: unknown keys {sorted(unknown)}")
        kw = dict(d)
        for key in ("mean", "std"):
            if key in kw:
                if not isinstance(kw[key], (list, tuple)):
                    raise ConfigError(f"input.{key} must be a list of 3 numbers, "
                                      f"got {kw[key]!r}")
                kw[key] = tuple(kw[key])
        return cls(**kw)

    def with_layout(self, layout: str) -> InputSpec:
        d = self.to_dict()
        d["layout"] = layout
        return InputSpec.from_dict(d)


def resize(frame: np.ndarray, size: int) -> np.ndarray:
    """Resize an ``H×W×3`` uint8 frame to ``size×size`` with Pillow's bilinear filter."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 frame, got shape {frame.shape}")
    if frame.shape[0] == size and frame.shape[1] == size:
        return frame
    img = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR))


def preprocess(frame: np.ndarray, spec: InputSpec, source_order: str = "RGB") -> np.ndarray:
    """Turn one frame into a model input of shape ``(1, 3, s, s)`` (or NHWC) float32."""
    if frame.dtype != np.uint8:
        raise ValueError(f"expected a uint8 frame, got {frame.dtype}")
    if source_order != spec.colour_order:
        frame = frame[:, :, ::-1]
    x: np.ndarray = resize(frame, spec.size).astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    x = x[None]  # NHWC
    if spec.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32)


def preprocess_batch(
    frames: list[np.ndarray], spec: InputSpec, source_order: str = "RGB"
) -> np.ndarray:
    """Preprocess several frames into one batch."""
    return np.concatenate([preprocess(f, spec, source_order) for f in frames], axis=0)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
