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


def nesting_depth(raw: bytes) -> int:
    """How deeply ``[``/``{`` nest in JSON text (brackets inside strings not counted).

    Checked before parsing: json's recursive parser would otherwise meet a manifest
    nested 100,000 deep with a RecursionError traceback instead of a refusal. The
    standard library has no depth limit; strings are cut out with one regex (C speed)
    and the brackets left are counted."""
    depth = deepest = 0
    for b in _STRING.sub(b"", raw).translate(None, _NOT_BRACKET):
        if b in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
MAX_DEPTH = 16  # the deepest a real manifest nests is 4 (provenance.config.<section>.key)


def parse_manifest(raw: bytes, label: str = "bundle") -> dict[str, Any]:
    """Parse manifest bytes strictly: the one reader of ``manifest.json`` (board, host,
    collector). A duplicated key, NaN/Infinity, nesting deeper than ``MAX_DEPTH`` or
    anything but a JSON object is refused, so no two readers can see different manifests
    in the same bytes. Types and ranges of the fields: :func:`check_manifest`."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{label}: {MANIFEST} is {len(raw)} bytes, over {MAX_MANIFEST_BYTES}")
    if not isinstance(raw, bytes):
        raw = bytes(raw)
    if nesting_depth(raw) > MAX_DEPTH:
        raise BundleError(f"{label}: {MANIFEST} nests deeper than {MAX_DEPTH} levels")
    try:
        manifest = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _DuplicateKey as err:
        raise BundleError(f"{label}: {MANIFEST} has a {err}") from err
    except (ValueError, UnicodeDecodeError, RecursionError) as err:  # JSONDecodeError: ValueError
        raise BundleError(f"{label}: {MANIFEST} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict):
        raise BundleError(f"{label}: {MANIFEST} must hold a JSON object")
    return manifest


# -- the fields, to the letter of docs/bundle-format.md ----------------------------------

MAX_TEXT = 256  # name, version, label, path: characters
MAX_LABELS = 1000
MAX_ARTIFACTS = 16
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _text(m: dict[str, Any], key: str, where: str, label: str) -> str:
    v = m[key]
    if not isinstance(v, str) or not v.strip() or len(v) > MAX_TEXT:
        raise BundleError(f"{label}: manifest field '{where}' must be a non-empty string of at "
                          f"most {MAX_TEXT} characters, got {_short(v)}")
    return v


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _object(v: Any, where: str, label: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise BundleError(f"{label}: manifest field '{where}' must be an object, got {_short(v)}")
    return v


def _fraction(v: Any, where: str, label: str, allow_none: bool = True) -> None:
    if v is None and allow_none:
        return
    if not _is_number(v) or not 0.0 <= v <= 1.0:
        raise BundleError(f"{label}: manifest field '{where}' must be a number in [0, 1], "
                          f"got {_short(v)}")


def _bool(v: Any, where: str, label: str) -> None:
    if not isinstance(v, bool):
        raise BundleError(f"{label}: manifest field '{where}' must be true or false, "
                          f"got {_short(v)}")


def _file_entry(e: dict[str, Any], where: str, label: str) -> None:
    if not isinstance(e.get("sha256"), str) or not _SHA256.fullmatch(e["sha256"]):
        raise BundleError(f"{label}: manifest field '{where}.sha256' must be 64 lower-case "
                          f"hex digits, got {_short(e.get('sha256'))}")
    if not _is_int(e.get("bytes")) or e["bytes"] < 0:
        raise BundleError(f"{label}: manifest field '{where}.bytes' must be a non-negative "
                          f"integer, got {_short(e.get('bytes'))}")


def check_manifest(m: dict[str, Any], label: str = "bundle") -> None:
    """Refuse a manifest whose fields do not have the types and ranges the format gives
    (docs/bundle-format.md), with one line naming the field. Paths, the input spec and the
    files themselves are checked by ``verify_dir``; this is every field's type."""
    if "schema_version" not in m:
        raise BundleError(f"{label}: manifest field 'schema_version' missing")
    sv = m["schema_version"]
    if not _is_int(sv) or sv != SCHEMA_VERSION:  # true and 1.0 are not 1
        raise BundleError(f"{label}: unsupported schema_version {sv!r} "
                          f"(this version reads {SCHEMA_VERSION})")
    for key in REQUIRED_FIELDS:
        if key not in m:
            raise BundleError(f"{label}: manifest field '{key}' missing")
    _text(m, "name", "name", label)
    version = _text(m, "version", "version", label)
    if not version_key(version):
        raise BundleError(f"{label}: manifest field 'version' {version!r} has no digits or "
                          "letters to order it by")
    labels = m["labels"]
    if not (isinstance(labels, list) and 2 <= len(labels) <= MAX_LABELS
            and all(isinstance(s, str) and s and len(s) <= MAX_TEXT for s in labels)):
        raise BundleError(f"{label}: manifest field 'labels' must list at least 2 names")
    if len(set(labels)) != len(labels):
        raise BundleError(f"{label}: manifest field 'labels' names a class twice")
    rejects = m["reject_labels"]
    if (not isinstance(rejects, list) or not all(isinstance(s, str) for s in rejects)
            or not set(rejects) <= set(labels) or len(set(rejects)) != len(rejects)):
        raise BundleError(
            f"{label}: manifest field 'reject_labels' must be a subset of 'labels'"
        )
    _object(m["input"], "input", label)
    arts = m["artifacts"]
    if not isinstance(arts, list) or not 1 <= len(arts) <= MAX_ARTIFACTS:
        raise BundleError(f"{label}: manifest field 'artifacts' must be a non-empty list of at "
                          f"most {MAX_ARTIFACTS}")
    for i, a in enumerate(arts):
        where = f"artifacts[{i}]"
        _object(a, where, label)
        for key in ARTIFACT_FIELDS:
            if key not in a:
                raise BundleError(f"{label}: manifest field '{where}.{key}' missing")
        if not isinstance(a["path"], str):
            raise BundleError(f"{label}: manifest field '{where}.path' must be a file name")
        if a["format"] not in FORMATS:
            raise BundleError(f"{label}: {a['path']}: unknown format {_short(a['format'])} "
                              "(expected onnx or tflite)")
        if a["precision"] not in PRECISIONS:
            raise BundleError(f"{label}: {a['path']}: unknown precision "
                              f"{_short(a['precision'])} (expected fp32 or int8)")
        _file_entry(a, where, label)
        metrics = _object(a.get("metrics") or {}, f"{where}.metrics", label)
        if "deployable" in metrics:
            _bool(metrics["deployable"], f"{where}.metrics.deployable", label)
        tol = _object(a.get("tolerance") or {}, f"{where}.tolerance", label)
        if "max_abs" in tol and not (_is_number(tol["max_abs"]) and 0 <= tol["max_abs"] <= 1e6):
            raise BundleError(f"{label}: manifest field '{where}.tolerance.max_abs' must be a "
                              f"number in [0, 1e6], got {_short(tol['max_abs'])}")
        if "top1" in tol:
            _bool(tol["top1"], f"{where}.tolerance.top1", label)
    tv = m.get("test_vectors")
    if tv is not None:
        _object(tv, "test_vectors", label)
        if not isinstance(tv.get("path"), str):
            raise BundleError(f"{label}: manifest field 'test_vectors.path' missing")
        for key in ("sha256", "bytes"):
            if key not in tv:
                raise BundleError(f"{label}: manifest field 'test_vectors.{key}' missing")
        _file_entry(tv, "test_vectors", label)
        if "count" in tv and not (_is_int(tv["count"]) and tv["count"] >= 0):
            raise BundleError(f"{label}: manifest field 'test_vectors.count' must be a "
                              f"non-negative integer, got {_short(tv['count'])}")
    for key in ("metrics", "baseline", "provenance"):
        if m.get(key) is not None:
            _object(m[key], key, label)
    for key in ("metrics", "baseline"):
        section = m.get(key) or {}
        if "accuracy" in section:
            _fraction(section["accuracy"], f"{key}.accuracy", label)
    if "min_accuracy" in m:
        _fraction(m["min_accuracy"], "min_accuracy", label)
    if "deployable" in m:
        _bool(m["deployable"], "deployable", label)
    if m.get("default_precision") is not None and m["default_precision"] not in PRECISIONS:
        raise BundleError(f"{label}: manifest field 'default_precision' must be fp32 or int8, "
                          f"got {_short(m['default_precision'])}")
    if m.get("created") is not None and not isinstance(m["created"], str):
        raise BundleError(f"{label}: manifest field 'created' must be a string")
    if m.get("deadline") is not None:
        dl = _object(m["deadline"], "deadline", label)
        b = dl.get("budget_ms")
        if not (isinstance(b, (int, float)) and not isinstance(b, bool) and 0 < b <= 3.6e6):
            raise BundleError(f"{label}: manifest field 'deadline.budget_ms' must be a positive "
                              f"number of ms, got {_short(b)}")


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

