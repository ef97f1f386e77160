"""Hostile bundles, as an importable list: each case turns a good bundle into a bad one.

``CASES`` is used by ``tests/common/test_bundle.py`` and is meant for
``benchmarks/bench_faults.py`` too. A case's ``make(good, work)`` takes a good, unsigned
bundle folder (left untouched) and a scratch folder, and returns the path of the bad
bundle (a folder or a ``.tar``) that ``load_bundle(path, **case.kwargs)`` must refuse
with a ``BundleError`` whose message contains ``case.error``. Needs edge_common only.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_common.bundle import MANIFEST, MAX_BUNDLE_BYTES, MAX_MEMBER_BYTES, pack_tar


@dataclass(frozen=True)
class BadBundle:
    name: str
    what: str
    make: Callable[[Path, Path], Path]
    error: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def _copy(good: Path, work: Path) -> Path:
    out = work / "bundle"
    shutil.copytree(good, out)
    return out


def _tar(good: Path, work: Path, extra: Callable[[tarfile.TarFile], None]) -> Path:
    """The good bundle packed as a tar, plus whatever ``extra`` appends."""
    tar_path = pack_tar(good, work / "base.tar")
    out = work / "bad.tar"
    with tarfile.open(tar_path) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isreg() else None)
        extra(dst)
    return out


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"",
            linkname: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.size = kind, linkname, len(data)
        tar.addfile(info, io.BytesIO(data) if data else None)
    return add


def unlisted_file_dir(good: Path, work: Path) -> Path:
    out = _copy(good, work)
    with open(out / "zeros.bin", "wb") as fh:  # sparse: 512 MiB of zeros, no disk used
        fh.truncate(512 * 1024**2)
    return out


def unlisted_member_tar(good: Path, work: Path) -> Path:
    return _tar(good, work, _member("extra.bin", data=b"\0" * 4096))


def symlink_dir(good: Path, work: Path) -> Path:
    """An artifact replaced by a symlink to an identical file outside the bundle."""
    out = _copy(good, work)
    victim = sorted(p for p in out.iterdir() if p.suffix in (".onnx", ".tflite"))[0]
    outside = work / "outside.bin"
    shutil.copyfile(victim, outside)
    victim.unlink()
    victim.symlink_to(outside)
    return out


def symlink_manifest_dir(good: Path, work: Path) -> Path:
    out = _copy(good, work)
    shutil.move(out / MANIFEST, work / "real-manifest.json")
    (out / MANIFEST).symlink_to(work / "real-manifest.json")
    return out


def fifo_dir(good: Path, work: Path) -> Path:
    out = _copy(good, work)
    os.mkfifo(out / "pipe")
    return out


def duplicate_key_manifest(good: Path, work: Path) -> Path:
    """``version`` twice: Python's json keeps the last, other readers the first."""
    out = _copy(good, work)
    text = (out / MANIFEST).read_text()
    m = json.loads(text)
    body = text.rstrip().rstrip("}").rstrip()
    (out / MANIFEST).write_text(body + f',\n  "version": "{m["version"]}-evil"\n}}\n')
    return out


def nan_in_manifest(good: Path, work: Path) -> Path:
    out = _copy(good, work)
    text = (out / MANIFEST).read_text()
    (out / MANIFEST).write_text(text.replace('"min_accuracy": ', '"min_accuracy": NaN, "x": ', 1))
    return out


def oversize_listed_file_dir(good: Path, work: Path) -> Path:
    """The manifest lists (and hashes) an artifact over the per-file limit."""
    out = _copy(good, work)
    m = json.loads((out / MANIFEST).read_text())
    art = m["artifacts"][0]
    with open(out / art["path"], "wb") as fh:
        fh.truncate(MAX_MEMBER_BYTES + 1)
    art["bytes"] = MAX_MEMBER_BYTES + 1
    (out / MANIFEST).write_text(json.dumps(m, indent=2))
    return out


def _sparse_tar(work: Path, sizes: list[int]) -> Path:
    """Tar headers claiming ``sizes`` with holes for the data: a few kB on disk."""
    out = work / "big.tar"
    with open(out, "wb") as fh:
        for i, size in enumerate(sizes):
            info = tarfile.TarInfo(f"blob{i}.bin")
            info.size = size
            fh.write(info.tobuf(tarfile.USTAR_FORMAT))
            blocks = -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            fh.seek(blocks, os.SEEK_CUR)
        fh.write(b"\0" * tarfile.RECORDSIZE)
    return out


def oversize_member_tar(good: Path, work: Path) -> Path:
    return _sparse_tar(work, [MAX_MEMBER_BYTES + 1])


def oversize_total_tar(good: Path, work: Path) -> Path:
    n = MAX_BUNDLE_BYTES // MAX_MEMBER_BYTES + 1
    return _sparse_tar(work, [MAX_MEMBER_BYTES] * n)


def _edit(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path, Path], Path]:
    """A case that rewrites one manifest field (the bundle stays unsigned and listed)."""
    def make(good: Path, work: Path) -> Path:
        out = _copy(good, work)
        m = json.loads((out / MANIFEST).read_text())
        change(m)
        (out / MANIFEST).write_text(json.dumps(m))
        return out
    return make


def deep_manifest(good: Path, work: Path) -> Path:
    """A manifest nested 100,000 deep: json's recursive parser would raise RecursionError."""
    out = _copy(good, work)
    text = (out / MANIFEST).read_text().rstrip().rstrip("}")
    depth = 100_000
    (out / MANIFEST).write_text(text + ', "x": ' + "[" * depth + "]" * depth + "}")
    return out


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            m = m[int(key)] if isinstance(m, list) else m[key]
        m[last] = value
    return change


# Issue 36: manifests that passed verify on b07fc59 and broke later (or crashed it).
# (An input.size that disagrees with the test vectors is refused when they are replayed,
# not by load_bundle: tests/device/test_fail_closed.py.)
STRICT_CASES: list[BadBundle] = [
    BadBundle("schema-version-true", "schema_version: true", _edit(_set("schema_version", True)),
              "unsupported schema_version True"),
    BadBundle("schema-version-float", "schema_version: 1.0", _edit(_set("schema_version", 1.0)),
              "unsupported schema_version 1.0"),
    BadBundle("input-size-string", 'input.size: "64"', _edit(_set("input.size", "32")),
              "input.size must be an integer"),
    BadBundle("zero-std", "input.std: [0, 0, 0] (every input inf, every score NaN)",
              _edit(_set("input.std", [0, 0, 0])), "input.std must be within"),
    BadBundle("string-std", 'input.std: ["1", 1, 1]', _edit(_set("input.std", ["1", 1, 1])),
              "input.std must hold 3 finite numbers"),
    BadBundle("deep-manifest", "a manifest nested 100,000 deep", deep_manifest,
              "nests deeper than 16 levels"),
    BadBundle("accuracy-string", 'metrics.accuracy: "high"',
              _edit(_set("metrics.accuracy", "high")), "'metrics.accuracy' must be a number"),
    BadBundle("sha-not-hex", "an artifact sha256 that is not 64 hex digits",
              _edit(_set("artifacts.0.sha256", "not-a-hash")), "must be 64 lower-case hex"),
    BadBundle("bytes-float", "an artifact size of 12.5 bytes",
              _edit(_set("artifacts.0.bytes", 12.5)), "must be a non-negative integer"),
    BadBundle("version-empty", "an empty version", _edit(_set("version", "")),
              "'version' must be a non-empty string"),
    BadBundle("version-no-key", "a version with nothing to order by", _edit(_set("version", "--")),
              "has no digits or letters"),
    BadBundle("labels-twice", "a class named twice", _edit(_set("labels", ["ok", "ok"])),
              "names a class twice"),
    BadBundle("deployable-string", 'deployable: "yes"', _edit(_set("deployable", "yes")),
              "'deployable' must be true or false"),
    BadBundle("tolerance-negative", "tolerance.max_abs: -1",
              _edit(_set("artifacts.0.tolerance.max_abs", -1)), "tolerance.max_abs"),
]


CASES: list[BadBundle] = [
    BadBundle("unlisted-file-dir", "a 512 MiB file the manifest does not list (folder)",
              unlisted_file_dir, "zeros.bin is not listed in the manifest"),
    BadBundle("unlisted-member-tar", "a member the manifest does not list (tar)",
              unlisted_member_tar, "'extra.bin' is not listed in the manifest"),
    BadBundle("symlink-artifact-dir", "an artifact that is a symlink out of the bundle",
              symlink_dir, "is a symlink (not followed)"),
    BadBundle("symlink-manifest-dir", "manifest.json is a symlink",
              symlink_manifest_dir, "manifest.json is not a regular file"),
    BadBundle("fifo-dir", "a FIFO in the bundle folder", fifo_dir, "pipe is a special file"),
    BadBundle("symlink-tar", "a symlink member", lambda g, w: _tar(
        g, w, _member("model.fp32.onnx.link", tarfile.SYMTYPE, linkname="/etc/passwd")),
        "link"),
    BadBundle("hardlink-tar", "a hard link member", lambda g, w: _tar(
        g, w, _member("hard", tarfile.LNKTYPE, linkname="manifest.json")), "link"),
    BadBundle("fifo-tar", "a FIFO member", lambda g, w: _tar(
        g, w, _member("pipe", tarfile.FIFOTYPE)), "device or special file"),
    BadBundle("device-tar", "a character device member", lambda g, w: _tar(
        g, w, _member("null", tarfile.CHRTYPE)), "device or special file"),
    BadBundle("traversal-tar", "a member with '..' in its path", lambda g, w: _tar(
        g, w, _member("../evil", data=b"x")), "'..' in path"),
    BadBundle("absolute-tar", "a member with an absolute path", lambda g, w: _tar(
        g, w, _member("/tmp/evil", data=b"x")), "absolute path"),
    BadBundle("duplicate-member-tar", "manifest.json twice in one tar", lambda g, w: _tar(
        g, w, _member(MANIFEST, data=b'{"schema_version": 1}')), "appears twice"),
    BadBundle("duplicate-key-manifest", "a manifest key given twice",
              duplicate_key_manifest, "duplicate key 'version'"),
    BadBundle("nan-manifest", "NaN in the manifest", nan_in_manifest, "NaN is not allowed"),
    BadBundle("oversize-file-dir", "a listed artifact over the per-file limit",
              oversize_listed_file_dir, f"within the limit of {MAX_MEMBER_BYTES} bytes"),
    BadBundle("oversize-member-tar", "a tar header over the per-member limit",
              oversize_member_tar, f"over the limit of {MAX_MEMBER_BYTES}"),
    BadBundle("oversize-total-tar", "tar headers adding up over the total limit",
              oversize_total_tar, f"over the limit of {MAX_BUNDLE_BYTES}"),
    *STRICT_CASES,
]

__all__ = ["CASES", "BadBundle"]
