"""Bundle archives: a reproducible ``.tar`` writer and a streaming extractor that checks
every member before a byte is written (links, devices, ``..``, sizes, unlisted files)."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from edge_common.errors import BundleError
from edge_common.fileio import atomic_path
from edge_common.manifest import (
    MANIFEST,
    MAX_BUNDLE_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_MEMBER_BYTES,
    listed_files,
    parent_dirs,
    parse_manifest,
)


def pack_tar(bundle_dir: str | os.PathLike[str], tar_path: str | os.PathLike[str]) -> Path:
    """Pack a bundle directory into an uncompressed tar, byte-for-byte reproducible.

    Members sit at the archive root, sorted, with mtime 0, owner root and fixed modes;
    dot files (temporaries) are skipped, links refused. Written atomically.
    """
    root = Path(bundle_dir)
    if not (root / MANIFEST).is_file():
        raise BundleError(f"{root} is not a bundle: missing file {MANIFEST}")
    entries: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                entries.append(Path(dirpath) / name)
        for d in dirnames:
            entries.append(Path(dirpath) / d)
    entries.sort(key=lambda p: p.relative_to(root).as_posix())
    out = Path(tar_path)
    with atomic_path(out) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for p in entries:
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                raise BundleError(f"refusing to pack symlink {rel}")
            info = tarfile.TarInfo(rel)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if p.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.mode = 0o644
                info.size = p.stat().st_size
                with open(p, "rb") as fh:
                    tar.addfile(info, fh)
    return out


def _check_member(m: tarfile.TarInfo, max_member_bytes: int = MAX_MEMBER_BYTES) -> None:
    """Header checks, before a byte is written: a short printable name (a NUL would reach
    ``os.open`` as a ValueError; found by tests/test_fuzz.py), relative path, no ``..``, a
    regular file or directory (no symlink, hard link, device or FIFO), not over the size
    limit."""
    name = m.name
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name) or len(name) > 255:
        raise BundleError(f"unsafe tar member {name[:80]!r}: control character or over 255 "
                          "characters in its name")
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or "\\" in name:
        raise BundleError(f"unsafe tar member {name!r}: absolute path")
    if ".." in parts:
        raise BundleError(f"unsafe tar member {name!r}: '..' in path")
    if m.issym() or m.islnk():
        raise BundleError(f"unsafe tar member {name!r}: link")
    if not (m.isreg() or m.isdir()):
        raise BundleError(f"unsafe tar member {name!r}: device or special file")
    if m.size > max_member_bytes:
        raise BundleError(f"tar member {name!r} is {m.size} bytes, over the limit "
                          f"of {max_member_bytes}")


def _copy_limited(src: Any, dest: Path, size: int, name: str) -> None:
    """Stream one member to a new file, never writing more than its header's ``size``."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    written = 0
    with os.fdopen(fd, "wb") as out:
        while True:
            chunk = src.read(min(1 << 20, size - written + 1))
            if not chunk:
                break
            written += len(chunk)
            if written > size:
                raise BundleError(f"tar member {name!r} holds more than its header's "
                                  f"{size} bytes")
            out.write(chunk)
    if written != size:
        raise BundleError(f"tar member {name!r} is truncated ({written} of {size} bytes)")


def extract_tar(
    tar_path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    max_bytes: int = MAX_BUNDLE_BYTES,
    max_member_bytes: int = MAX_MEMBER_BYTES,
) -> Path:
    """Extract a bundle tar into ``dest`` (new or empty) safely; return the bundle root.

    Every header is checked before anything is written (see ``_check_member``; no member
    named twice; the total under ``max_bytes``); then the manifest is read from the
    archive (strictly, :func:`parse_manifest`) and every member it does not list is
    refused. Members are streamed out by this code (not ``extractall``) so a member can
    never write more than its header said, and files are created with ``O_EXCL`` and
    ``O_NOFOLLOW``. tarfile's ``data`` filter, where this Python has it (3.11.4+; not
    Debian 12's 3.11.2), is asked too, as a second opinion only.
    """
    src, out = Path(tar_path), Path(dest)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"cannot extract into {out}: directory is not empty")
    label = f"bundle archive {src.name}"
    try:
        with tarfile.open(src, "r:") as tar:
            members = tar.getmembers()
            total, seen = 0, set()
            for m in members:
                _check_member(m, max_member_bytes)
                key = PurePosixPath(m.name).as_posix()
                if key in seen:
                    raise BundleError(f"{label}: member {key!r} appears twice")
                seen.add(key)
                total += m.size
                if hasattr(tarfile, "data_filter"):
                    tarfile.data_filter(m, str(out))
            if total > max_bytes:
                raise BundleError(f"{label}: unpacks to {total} bytes, over the limit "
                                  f"of {max_bytes}")
            by_name = {PurePosixPath(m.name).as_posix(): m for m in members}
            if MANIFEST in by_name:
                prefix = ""
            else:  # the bundle in one top folder
                tops = [n for n in by_name if PurePosixPath(n).parts[1:] == (MANIFEST,)]
                if len(tops) != 1:
                    raise BundleError(f"{label}: missing file {MANIFEST}")
                prefix = tops[0][: -len(MANIFEST)]
            if not by_name[prefix + MANIFEST].isreg():
                raise BundleError(f"{label}: {MANIFEST} is not a regular file")
            fh = tar.extractfile(by_name[prefix + MANIFEST])
            assert fh is not None
            manifest = parse_manifest(fh.read(MAX_MANIFEST_BYTES + 1), label)
            allowed = listed_files(manifest)
            dirs = parent_dirs(allowed)
            for name, m in by_name.items():
                rel = name[len(prefix):] if name.startswith(prefix) else None
                if m.isdir() and (name == "." or (prefix and name == prefix.rstrip("/"))):
                    continue
                if rel is None or not ((m.isreg() and rel in allowed)
                                       or (m.isdir() and rel.rstrip("/") in dirs)):
                    raise BundleError(f"{label}: member {name!r} is not listed in the manifest")
            out.mkdir(parents=True, exist_ok=True)
            for m in sorted(members, key=lambda m: m.name):
                target = out / PurePosixPath(m.name)
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                data = tar.extractfile(m)
                assert data is not None
                _copy_limited(data, target, m.size, m.name)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise BundleError(f"cannot read bundle archive {src}: {err}") from err
    return out / prefix if prefix else out

