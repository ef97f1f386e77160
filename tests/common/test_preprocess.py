"""The board's numpy preprocessing equals the host's torchvision test-time transform."""

from __future__ import annotations

import numpy as np
import pytest

from edge_common.preprocess import InputSpec, preprocess
from edge_common.synthetic import render

torch = pytest.importorskip("torch")
PIL_Image = pytest.importorskip("PIL.Image")


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        render(3, 0, size=64)[0],  # the model size: no resize
        render(4, 0, size=100)[0],  # square, downscaled
        rng.integers(0, 256, size=(80, 100, 3), dtype=np.uint8),  # 100 wide × 80 high
        rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8),  # upscaled
    ]


@pytest.mark.parametrize("size", [64, 32])
def test_numpy_preprocess_matches_torchvision_transform(size):
    from edgectl.pipeline.data import test_transform

    spec = InputSpec(size=size)
    tf = test_transform(spec)
    for frame in _frames():
        ours = preprocess(frame, spec)
        ref = tf(PIL_Image.fromarray(frame)).numpy()[None]
        assert ours.shape == ref.shape == (1, 3, size, size)
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


def test_bgr_source_and_nhwc_layout():
    from edgectl.pipeline.data import test_transform

    spec = InputSpec(size=32)
    frame = render(5, 0, size=48)[0]
    ref = test_transform(spec)(PIL_Image.fromarray(frame)).numpy()[None]
    bgr = np.ascontiguousarray(frame[:, :, ::-1])
    np.testing.assert_allclose(preprocess(bgr, spec, source_order="BGR"), ref, atol=1e-5)
    nhwc = preprocess(frame, spec.with_layout("NHWC"))
    np.testing.assert_allclose(nhwc.transpose(0, 3, 1, 2), ref, atol=1e-5)
