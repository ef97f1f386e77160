"""INT8 calibration inputs: the one place they are made (build, quantize and study use it).

Calibration images are training frames, never test images (the INT8 model's test accuracy
stays honest), without augmentation, and preprocessed by ``edge_common.preprocess`` — the
numpy code the board runs — so the activation ranges are measured on the very tensors the
board will feed the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_common.errors import ModelError
from edge_common.preprocess import preprocess_batch

DEFAULT_CALIB_SIZE = 300


def calibration_inputs(datasets: Any, n: int = DEFAULT_CALIB_SIZE, seed: int = 0) -> np.ndarray:
    """``n`` training frames of ``datasets`` (a :class:`~edgectl.pipeline.data.Datasets`),
    drawn without replacement with ``seed``, as an ``(n, 3, s, s)`` float32 batch."""
    if n <= 0:
        raise ModelError(f"calibration size must be positive, got {n}")
    train = datasets.train
    if len(train) == 0:
        raise ModelError("no images to calibrate on")
    idx = np.random.default_rng(seed).permutation(len(train))[: min(n, len(train))]
    frames = [train.frame(int(i))[0] for i in sorted(idx)]
    return preprocess_batch(frames, datasets.input_spec)
