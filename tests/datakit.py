"""Image folders the tests make (``folder:`` data, as a user's own photos would be laid out)."""

from __future__ import annotations

from pathlib import Path


def separable_folder(root: Path, n_train: int = 192, n_test: int = 24, size: int = 32) -> Path:
    """Two classes a MobileNetV2 learns in three epochs at 32×32 (``ok``: grey noise;
    ``defect``: the same with a dark scratch), in ``train/`` and ``test/``. Why not the
    synthetic set: at 32×32 and a few hundred images it stays at chance, and the INT8 parity
    gate (rightly) refuses a pruned chance-level model's quantization."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for label in ("ok", "defect"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(90, 166, (size, size, 3)).astype(np.uint8)
                if label == "defect":
                    row = int(rng.integers(4, size - 4))
                    img[row:row + 3] = rng.integers(0, 30)
                Image.fromarray(img).save(folder / f"{i:04d}.png")
    return root
