"""Cameras behind one small interface: ``read() -> Frame`` (uint8 H×W×3 RGB, stamped).

Backends (chosen by ``camera.type``, env ``EDGE_CAMERA_TYPE``): ``picamera2`` (Raspberry
Pi camera modules), ``opencv`` (USB/V4L2, or a GStreamer pipeline for Jetson CSI),
``replay`` (a folder of images or a video file) and ``synthetic`` (the built-in dataset,
with ground truth). Each hardware library is imported only inside its backend module,
so this package imports on any machine. ``Resilient`` wraps any backend with reopen and
backoff so a camera that drops out degrades the agent instead of crashing it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edge_agent.backoff import backoff_delay
from edge_common.errors import HardwareError

if TYPE_CHECKING:
    from edge_agent.config import CameraConfig

log = logging.getLogger(__name__)

TYPES = ("picamera2", "opencv", "replay", "synthetic")


class CameraError(HardwareError):
    """A frame could not be captured (the camera failed, dropped out or is reopening)."""


class EndOfStream(CameraError):
    """A replay source without ``loop`` has no more frames."""


@dataclass(frozen=True)
class Frame:
    """One captured frame: ``image`` uint8 H×W×3 RGB; ``t_capture_ns`` from
    ``time.monotonic_ns()`` when the frame was captured; ``truth`` its label if known."""

    image: np.ndarray
    t_capture_ns: int
    truth: str | None = None


class Camera(Protocol):
    """What the agent needs from a camera."""

    name: str

    def open(self) -> None: ...

    def read(self) -> Frame: ...

    def close(self) -> None: ...


def make_camera(cfg: CameraConfig, labels: Sequence[str] = ()) -> Camera:
    """The backend named by ``cfg.type`` (not yet opened)."""
    if cfg.type == "synthetic":
        from edge_agent.camera.synthetic import SyntheticCamera

        return SyntheticCamera(cfg, labels)
    if cfg.type == "replay":
        from edge_agent.camera.replay import ReplayCamera

        return ReplayCamera(cfg, labels)
    if cfg.type == "opencv":
        from edge_agent.camera.opencv import OpenCVCamera

        return OpenCVCamera(cfg)
    if cfg.type == "picamera2":
        from edge_agent.camera.picam import Picamera2Camera

        return Picamera2Camera(cfg)
    raise CameraError(f"camera: unknown type {cfg.type!r} (one of {', '.join(TYPES)})")


class Resilient:
    """Wraps a camera: on a failed read it closes it and reopens with exponential backoff.

    While degraded, ``read()`` raises :class:`CameraError` at once (it never sleeps, so
    the main loop keeps pinging the watchdog); after ``give_up_s`` of continuous failure
    it raises :class:`HardwareError` (fatal: the service exits and systemd decides).
    """

    def __init__(
        self,
        camera: Camera,
        backoff_s: float = 0.5,
        backoff_max_s: float = 10.0,
        give_up_s: float = 60.0,
    ) -> None:
        self.camera = camera
        self.name = camera.name
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.give_up_s = give_up_s
        self.degraded_since: float | None = None
        self.last_error: str | None = None
        self.failures = 0
        self._next_try = 0.0
        self._open = False

    @property
    def degraded(self) -> bool:
        return self.degraded_since is not None

    def retry_in(self) -> float:
        return max(0.0, self._next_try - time.monotonic()) if self.degraded else 0.0

    def open(self) -> None:
        """First open: failures propagate (the service refuses to start without a camera)."""
        self.camera.open()
        self._open = True

    def read(self) -> Frame:
        now = time.monotonic()
        if self.degraded:
            assert self.degraded_since is not None
            if self.give_up_s > 0 and now - self.degraded_since > self.give_up_s:
                raise HardwareError(
                    f"camera {self.name}: failed for {now - self.degraded_since:.0f} s, "
                    f"giving up: {self.last_error}"
                )
            if now < self._next_try:
                raise CameraError(f"camera {self.name} degraded: {self.last_error}")
            try:
                if self._open:
                    self.camera.close()
                self.camera.open()
                self._open = True
            except Exception as err:  # noqa: BLE001 - any backend failure means "retry later"
                self._fail(f"reopen failed: {err}")
                raise CameraError(f"camera {self.name}: {self.last_error}") from err
        try:
            frame = self.camera.read()
        except EndOfStream:
            raise
        except Exception as err:  # noqa: BLE001
            self._fail(str(err))
            raise CameraError(f"camera {self.name}: {err}") from err
        if self.degraded:
            log.warning("camera %s recovered after %d failures", self.name, self.failures)
        self.degraded_since = None
        self.failures = 0
        return frame

    def _fail(self, msg: str) -> None:
        now = time.monotonic()
        if self.degraded_since is None:
            self.degraded_since = now
            log.warning("camera %s degraded: %s", self.name, msg)
        self.failures += 1
        self.last_error = msg
        # a zero first wait still grows (0.01 s, 0.02 s, …): never a busy reopen loop
        self._next_try = now + backoff_delay(self.failures, self.backoff_s or 0.01,
                                             self.backoff_max_s)

    def close(self) -> None:
        if self._open:
            try:
                self.camera.close()
            finally:
                self._open = False
