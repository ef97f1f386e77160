"""Sample images on disk: a decision's frame encoded as JPEG or PNG (Pillow) and written
atomically, with the plant data's mode, as ``<samples_dir>/<UTC date>/<record id>.<ext>``.
The journal names the file in the decision's row; sync sends it to the host."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np

from edge_agent.journal_schema import DATA_MODE, SAMPLE_FORMATS
from edge_common.fileio import write_bytes_atomic


def encode_image(image: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode an ``H×W×3`` uint8 RGB frame as JPEG or PNG bytes (Pillow)."""
    from PIL import Image

    buf = io.BytesIO()
    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=quality)
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()


def write_sample(samples_dir: Path, fmt: str, rec_id: str, ts: float,
                 image: np.ndarray) -> tuple[str, int]:
    """Write ``image`` for record ``rec_id`` (taken at ``ts``); return its path relative to
    ``samples_dir`` and its size. ``OSError`` (disk full, read-only) is the caller's."""
    rel = f"{time.strftime('%Y%m%d', time.gmtime(ts))}/{rec_id}{SAMPLE_FORMATS[fmt]}"
    data = encode_image(image, fmt)
    write_bytes_atomic(samples_dir / rel, data, mode=DATA_MODE)
    return rel, len(data)
