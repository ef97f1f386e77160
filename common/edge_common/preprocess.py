"""The one definition of preprocessing, used at evaluation on the host and on the board.

A frame is an ``H×W×3`` ``uint8`` array in the colour order given by the input spec's
``source_order`` argument (cameras deliver RGB or BGR). It is resized with Pillow's
bilinear filter (the same code path torchvision's ``Resize`` takes on PIL images, so
the host's test-time transform and the board agree bit for bit), scaled to [0, 1],
normalised with the spec's mean and std and laid out as the spec says.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from edge_common.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        if int(self.size) <= 0:
            raise ConfigError(f"input.size must be positive, got {self.size}")
        if self.colour_order not in ("RGB", "BGR"):
            raise ConfigError(f"input.colour_order must be RGB or BGR, got {self.colour_order!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"input.layout must be NCHW or NHWC, got {self.layout!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError("input.mean and input.std must have 3 values")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        known = {"size", "colour_order", "layout", "mean", "std", "dtype"}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"input: unknown keys {sorted(unknown)}")
        kw = dict(d)
        if "mean" in kw:
            kw["mean"] = tuple(float(x) for x in kw["mean"])
        if "std" in kw:
            kw["std"] = tuple(float(x) for x in kw["std"])
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
    return np.asarray(img.resize((size, size), Image.BILINEAR))


def preprocess(frame: np.ndarray, spec: InputSpec, source_order: str = "RGB") -> np.ndarray:
    """Turn one frame into a model input of shape ``(1, 3, s, s)`` (or NHWC) float32."""
    if frame.dtype != np.uint8:
        raise ValueError(f"expected a uint8 frame, got {frame.dtype}")
    if source_order != spec.colour_order:
        frame = frame[:, :, ::-1]
    x = resize(frame, spec.size).astype(np.float32) / np.float32(255.0)
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
