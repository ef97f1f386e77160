"""Replay a folder of images or a video file as if it were a camera.

Folder: every ``.jpg/.jpeg/.png/.bmp/.webp`` below it, in sorted order, decoded with
Pillow; the first subfolder name is the ground truth when it is one of the model's labels
(``edgectl data export`` writes ``<label>/<n>.png``). Video: decoded with OpenCV (extra
``opencv``). ``loop`` restarts at the end; ``preload`` decodes everything first
(benchmarks: no decode cost in the loop).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.camera import CameraError, EndOfStream, Frame
from edge_common.errors import MissingExtraError

if TYPE_CHECKING:
    from edge_agent.config import CameraConfig

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".h264", ".mjpeg"}


def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as err:
        raise CameraError(f"replay: cannot decode {path}: {err}") from err


class ReplayCamera:
    """Frames from ``cfg.path``: a folder of images (class subfolders → truth) or a video."""

    name = "replay"

    def __init__(self, cfg: CameraConfig, labels: Sequence[str] = ()) -> None:
        if not cfg.path:
            raise CameraError("replay: camera.path is not set")
        self.path = Path(cfg.path)
        self.loop = cfg.loop
        self.preload = cfg.preload
        self.labels = set(labels)
        self.items: list[tuple[Path, str | None]] = []
        self._frames: list[np.ndarray] | None = None
        self._cap: Any = None
        self._in_memory = False
        self.index = 0

    def open(self) -> None:
        p = self.path
        if self._in_memory:
            return
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise CameraError(f"replay: no images in {p}")
            self.items = []
            for f in files:
                parts = f.relative_to(p).parts
                truth = parts[0] if len(parts) > 1 and parts[0] in self.labels else None
                self.items.append((f, truth))
            if self.preload and self._frames is None:
                self._frames = [_decode(f) for f, _ in self.items]
        elif p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            try:
                import cv2
            except ImportError as err:
                raise MissingExtraError(
                    "opencv-python-headless", "opencv", "to replay video"
                ) from err
            self._cap = cv2.VideoCapture(str(p))
            if not self._cap.isOpened():
                raise CameraError(f"replay: cannot open video {p}")
        elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            self.items = [(p, None)]
        else:
            raise CameraError(f"replay: {p} is not a folder of images or a video file")

    @classmethod
    def from_frames(
        cls, frames: Sequence[np.ndarray], truths: Sequence[str | None] = (), loop: bool = True
    ) -> ReplayCamera:
        """A replay camera over frames already in memory (tests, benchmarks)."""
        self = cls.__new__(cls)
        self.path = Path("<memory>")
        self.loop = loop
        self.preload = True
        self.labels = set()
        truths = list(truths) or [None] * len(frames)
        self.items = [(Path(f"<frame {i}>"), t) for i, t in enumerate(truths)]
        self._frames = [np.ascontiguousarray(f, dtype=np.uint8) for f in frames]
        self._cap = None
        self._in_memory = True
        self.index = 0
        return self

    def read(self) -> Frame:
        if self._cap is not None:
            ok, bgr = self._cap.read()
            if not ok:
                if not self.loop:
                    raise EndOfStream("replay: end of video")
                self._cap.set(1, 0)  # cv2.CAP_PROP_POS_FRAMES
                ok, bgr = self._cap.read()
                if not ok:
                    raise CameraError(f"replay: cannot read {self.path}")
            return Frame(np.ascontiguousarray(bgr[:, :, ::-1]), time.monotonic_ns(), None)
        if self.index >= len(self.items):
            if not self.loop or not self.items:
                raise EndOfStream(f"replay: end of {self.path}")
            self.index = 0
        i = self.index
        self.index += 1
        path, truth = self.items[i]
        image = self._frames[i] if self._frames is not None else _decode(path)
        return Frame(image, time.monotonic_ns(), truth)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
