"""The bundle manifest: its file names, limits and fields, the one strict reader of
``manifest.json``, its writer, and the order of bundle versions. See ``docs/bundle-format.md``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from edge_common.errors import BundleError
from edge_common.fileio import write_bytes_atomic

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
TEST_VECTORS = "test_vectors.npz"
FORMATS = ("onnx", "tflite")
PRECISIONS = ("fp32", "int8")
REQUIRED_FIELDS = (
    "schema_version", "name", "version", "labels", "reject_labels", "input", "artifacts",
)
ARTIFACT_FIELDS = ("path", "format", "precision", "sha256", "bytes")
DEFAULT_TOLERANCE: dict[str, Any] = {"max_abs": 1e-3, "top1": True}
# Size limits. A full-width MobileNetV2 bundle (6 classes) is about 25 MB: 8.9 MB per
# FP32 artifact (ONNX, TFLite), ~2.5 MB per INT8 one, test vectors under 5 MB even at
# 224 px. The limits leave room for bigger inputs and heads, and refuse the rest.
MAX_MEMBER_BYTES = 64 * 1024**2   # any one file
MAX_BUNDLE_BYTES = 256 * 1024**2  # all files together
MAX_MANIFEST_BYTES = 1024**2
MAX_SIGNATURE_BYTES = 4096


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def parse_manifest(raw: bytes, label: str = "bundle") -> dict[str, Any]:
    """Parse manifest bytes strictly: the one reader of ``manifest.json`` (board, host,
    collector). A duplicated key, NaN/Infinity or anything but a JSON object is refused,
    so no two readers can see different manifests in the same bytes."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{label}: {MANIFEST} is {len(raw)} bytes, over {MAX_MANIFEST_BYTES}")
    try:
        manifest = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _DuplicateKey as err:
        raise BundleError(f"{label}: {MANIFEST} has a {err}") from err
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise BundleError(f"{label}: {MANIFEST} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict):
        raise BundleError(f"{label}: {MANIFEST} must hold a JSON object")
    return manifest


def listed_files(manifest: dict[str, Any]) -> set[str]:
    """Every file a bundle may hold: the manifest, its signature, the artifacts and the
    test vectors the manifest lists. Anything else in a bundle is refused."""
    names = {MANIFEST, SIGNATURE}
    for a in manifest.get("artifacts") or []:
        if isinstance(a, dict) and isinstance(a.get("path"), str):
            names.add(a["path"])
    tv = manifest.get("test_vectors")
    if isinstance(tv, dict) and isinstance(tv.get("path"), str):
        names.add(tv["path"])
    return {PurePosixPath(n).as_posix() for n in names}


def parent_dirs(names: set[str]) -> set[str]:
    """The folders the listed files sit in (the only folders a bundle may hold)."""
    return {p.as_posix() for n in names for p in PurePosixPath(n).parents if p.as_posix() != "."}


def write_manifest(bundle_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically; a stale ``manifest.sig`` is removed (re-sign)."""
    root = Path(bundle_dir)
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    write_bytes_atomic(root / MANIFEST, data)
    (root / SIGNATURE).unlink(missing_ok=True)
    return root / MANIFEST



def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """The sort key of a bundle version: natural order.

    The version is cut into runs of digits and runs of letters (anything else separates);
    digit runs compare as numbers, letter runs as text, a number before a word, and a
    version that is a prefix of another is older. The builder writes
    ``YYYY.MM.DD-HHMMSS-<prune>-<sparsity>`` (UTC), so a later build is a newer version;
    ``test-2`` is newer than ``test-1`` and older than ``test-10``.
    """
    return tuple((0, int(t)) if t.isdigit() else (1, t.lower())
                 for t in re.findall(r"[0-9]+|[A-Za-z]+", version))


def is_older(version: str, than: str) -> bool:
    """True when bundle ``version`` is older than ``than`` (see :func:`version_key`)."""
    return version_key(version) < version_key(than)

