"""OpenCV ``VideoCapture``: a USB/V4L2 camera by index or path, or a GStreamer pipeline
(Jetson CSI cameras through ``nvarguscamerasrc``). OpenCV delivers BGR; frames are RGB.
Extra: ``pip install 'edge-agent[opencv]'`` (GStreamer pipelines need an OpenCV built with
GStreamer, e.g. JetPack's ``python3-opencv``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.camera import CameraError, Frame
from edge_common.errors import MissingExtraError

if TYPE_CHECKING:
    from edge_agent.config import CameraConfig


class OpenCVCamera:
    name = "opencv"

    def __init__(self, cfg: CameraConfig) -> None:
        self.cfg = cfg
        self._cap: Any = None

    def open(self) -> None:
        try:
            import cv2
        except ImportError as err:
            raise MissingExtraError("opencv-python-headless", "opencv") from err
        cfg = self.cfg
        if cfg.pipeline:
            cap = cv2.VideoCapture(cfg.pipeline, cv2.CAP_GSTREAMER)
            what = "GStreamer pipeline"
        else:
            cap = cv2.VideoCapture(cfg.device)
            what = f"device {cfg.device!r}"
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the freshest frame, not a queued one
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"camera opencv: cannot open {what}")
        self._cap = cap

    def read(self) -> Frame:
        if self._cap is None:
            raise CameraError("camera opencv: not open")
        ok, bgr = self._cap.read()
        t = time.monotonic_ns()
        if not ok or bgr is None:
            raise CameraError("camera opencv: no frame (disconnected?)")
        return Frame(np.ascontiguousarray(bgr[:, :, ::-1]), t, None)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
