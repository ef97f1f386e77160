"""The one sha256 of a file (bundles, updates, the study's caches) and the one settings
digest (cache keys)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_chunks(chunks: Any) -> str:
    """The sha256 of byte strings fed in order (a model's tensors, without a file)."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def settings_key(settings: Any) -> str:
    """A short, stable digest of JSON-able settings: the cache key of a baseline or a study
    cell (a changed key means recompute). Keys are sorted; values JSON cannot write go
    through ``str``."""
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
