"""Raspberry Pi camera modules through picamera2 (libcamera).

picamera2 comes with Raspberry Pi OS: ``sudo apt install python3-picamera2`` and a venv
made with ``--system-site-packages`` (or ``pip install 'edge-agent[pi]'``, which needs the
libcamera development files). Frames are requested as ``RGB888``, which libcamera lays
out as B, G, R bytes; they are flipped to RGB here.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.camera import CameraError, Frame
from edge_common.errors import MissingExtraError

if TYPE_CHECKING:
    from edge_agent.config import CameraConfig


class Picamera2Camera:
    name = "picamera2"

    def __init__(self, cfg: CameraConfig) -> None:
        self.cfg = cfg
        self._cam: Any = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]
        except ImportError as err:
            raise MissingExtraError(
                "picamera2", "pi", "on Raspberry Pi OS: sudo apt install python3-picamera2"
            ) from err
        try:
            cam = Picamera2()
            config = cam.create_video_configuration(
                main={"size": (self.cfg.width, self.cfg.height), "format": "RGB888"},
                buffer_count=2,
            )
            cam.configure(config)
            cam.start()
        except Exception as err:  # noqa: BLE001 - libcamera raises RuntimeError and others
            raise CameraError(f"camera picamera2: cannot open: {err}") from err
        self._cam = cam

    def read(self) -> Frame:
        if self._cam is None:
            raise CameraError("camera picamera2: not open")
        bgr = self._cam.capture_array("main")
        t = time.monotonic_ns()
        return Frame(np.ascontiguousarray(bgr[:, :, 2::-1]), t, None)

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
                self._cam.close()
            finally:
                self._cam = None
