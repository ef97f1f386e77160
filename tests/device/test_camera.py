"""Camera backends: replay (folders with class subfolders), synthetic truth, resilience."""

from __future__ import annotations

import numpy as np
import pytest
from devicekit import frame
from PIL import Image

from edge_agent.camera import CameraError, EndOfStream, Resilient, make_camera
from edge_agent.config import CameraConfig
from edge_common.errors import HardwareError, MissingExtraError


def test_replay_folder_truth_from_subfolders_and_loop(tmp_path):
    for label, colour in (("ok", "green"), ("scratch", "red"), ("misc", "blue")):
        (tmp_path / label).mkdir()
        Image.fromarray(frame(colour)).save(tmp_path / label / "a.png")
    cam = make_camera(
        CameraConfig(type="replay", path=str(tmp_path), loop=False), labels=["ok", "scratch"]
    )
    cam.open()
    frames = [cam.read() for _ in range(3)]
    assert [f.truth for f in frames] == [None, "ok", "scratch"]  # sorted: misc, ok, scratch
    assert frames[1].image.dtype == np.uint8 and frames[1].image.shape == (48, 64, 3)
    assert frames[2].image[0, 0].tolist() == [230, 0, 0]  # RGB order kept
    assert frames[0].t_capture_ns < frames[2].t_capture_ns
    with pytest.raises(EndOfStream):
        cam.read()


def test_synthetic_camera_has_ground_truth():
    from edge_common import synthetic

    cam = make_camera(CameraConfig(type="synthetic", size=32, seed=3))
    cam.open()
    frames = [cam.read() for _ in range(6)]
    assert {f.truth for f in frames} == set(synthetic.LABELS)
    img, label = synthetic.render(0, 3, 32)
    assert np.array_equal(frames[0].image, img) and frames[0].truth == synthetic.LABELS[label]


def test_missing_libraries_name_the_extra():
    with pytest.raises(MissingExtraError, match=r"edge-agent\[pi\]"):
        make_camera(CameraConfig(type="picamera2")).open()
    try:
        import cv2  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError, match=r"edge-agent\[opencv\]"):
            make_camera(CameraConfig(type="opencv")).open()


class Flaky:
    name = "flaky"

    def __init__(self, fail_from: int, recover_at: int | None = None) -> None:
        self.n = 0
        self.fail_from = fail_from
        self.recover_at = recover_at
        self.opens = 0

    def open(self) -> None:
        self.opens += 1

    def read(self):
        from edge_agent.camera import Frame

        self.n += 1
        if self.n >= self.fail_from and (self.recover_at is None or self.n < self.recover_at):
            raise OSError("USB disconnect")
        return Frame(frame("green"), 0, None)

    def close(self) -> None:
        pass


def test_resilient_camera_backs_off_recovers_and_gives_up():
    cam = Resilient(Flaky(fail_from=2, recover_at=4), backoff_s=0.0, backoff_max_s=0.0, give_up_s=5)
    cam.open()
    cam.read()
    with pytest.raises(CameraError, match="USB disconnect"):
        cam.read()
    assert cam.degraded
    with pytest.raises(CameraError):
        cam.read()  # reopened, still failing
    cam.read()  # recovered
    assert not cam.degraded and cam.camera.opens >= 2

    dead = Resilient(Flaky(fail_from=1), backoff_s=10.0, backoff_max_s=10.0, give_up_s=0.05)
    dead.open()
    with pytest.raises(CameraError):
        dead.read()
    with pytest.raises(CameraError, match="degraded"):
        dead.read()  # in backoff: fails at once, does not sleep
    import time

    time.sleep(0.1)
    with pytest.raises(HardwareError, match="giving up"):
        dead.read()


def test_resilient_camera_waits_double_each_failure_up_to_the_cap(monkeypatch):
    """The reopen schedule is edge_agent.backoff's: 1, 2, 3 (capped), 3 s; no sleeping."""
    import edge_agent.camera as camera_mod

    clock = [100.0]
    monkeypatch.setattr(camera_mod.time, "monotonic", lambda: clock[0])
    cam = Resilient(Flaky(fail_from=1), backoff_s=1.0, backoff_max_s=3.0, give_up_s=0)
    cam.open()
    waits = []
    for _ in range(4):
        with pytest.raises(CameraError):
            cam.read()
        waits.append(cam.retry_in())
        clock[0] += cam.retry_in()
    assert waits == [1.0, 2.0, 3.0, 3.0]
    assert cam.camera.opens == 4            # the first open, then one reopen per wait
