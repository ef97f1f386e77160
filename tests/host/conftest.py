"""Host fixtures: a tiny data config and a tiny trained checkpoint, shared by host tests.

``tiny_checkpoint`` is MobileNetV2 at ``width_mult=0.25`` on 32×32 synthetic images,
trained for one epoch on 48 images: seconds on a 2-core CPU, a real checkpoint with the
full metadata (accuracy near chance; tests must not rely on it being good).
"""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = {"train_size": 48, "test_size": 24, "img_size": 32, "seed": 0}


@pytest.fixture(scope="session")
def tiny_data_config():
    """``DataConfig``: synthetic, 48 train / 24 test images at 32×32, seed 0."""
    from edgectl.pipeline.data import DataConfig

    return DataConfig.from_spec("synthetic", **TINY)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_data_config, tmp_path_factory) -> Path:
    """Path to ``model.pt`` of a 1-epoch width-0.25 MobileNetV2 (do not modify the file)."""
    from edgectl.pipeline.baseline import train_baseline

    out = tmp_path_factory.mktemp("tiny_ckpt")
    result = train_baseline(
        tiny_data_config,
        out,
        epochs=1,
        batch_size=16,
        lr=1e-3,
        width_mult=0.25,
        threads=1,
        progress=False,
    )
    return Path(result["checkpoint"])


@pytest.fixture(scope="module")
def tiny_model():
    """A random (untrained) MobileNetV2, width 0.25, 6 classes, in eval mode: for export,
    parity and quantization tests at 32×32 (one per test module)."""
    import torch

    from edgectl.pipeline.model import build_model

    torch.manual_seed(0)
    return build_model(6, width_mult=0.25).eval()
