"""Bundle files on the collector: read a bundle ``.tar``'s manifest without extracting it.

The collector only checks a bundle's shape (a manifest with a safe version, no unsafe
member names); the board verifies checksums, signature and test vectors itself, because it
must not trust the network or the host's disk.
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from edge_common.bundle import parse_manifest
from edge_common.errors import BundleError
from edgectl.collector.names import is_safe_name

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1024 * 1024


def _member_is_safe(name: str) -> bool:
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts


def read_tar_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a bundle ``.tar`` (at its root or in its one top folder).

    ``BundleError`` if the file is not a tar, a member name is unsafe (absolute, ``..``),
    a member is a link or device, or the manifest is missing, unreadable or has no safe
    ``version``.
    """
    try:
        with tarfile.open(path, "r:*") as tar:
            members = tar.getmembers()
            candidates = []
            for m in members:
                if not _member_is_safe(m.name):
                    raise BundleError(f"bundle member {m.name!r} has an unsafe path")
                if not (m.isfile() or m.isdir()):
                    raise BundleError(f"bundle member {m.name!r} is not a regular file")
                parts = PurePosixPath(m.name).parts
                parts = tuple(p for p in parts if p != ".")
                if m.isfile() and parts and parts[-1] == MANIFEST and len(parts) <= 2:
                    candidates.append((len(parts), m))
            if not candidates:
                raise BundleError("bundle has no manifest.json")
            _, member = min(candidates, key=lambda c: c[0])
            if member.size > MAX_MANIFEST_BYTES:
                raise BundleError("bundle manifest.json is too large")
            fh = tar.extractfile(member)
            assert fh is not None
            # The one strict reader the board uses too: duplicate keys and NaN refused.
            manifest = parse_manifest(fh.read(), "bundle")
    except (tarfile.TarError, OSError) as err:
        raise BundleError(f"not a bundle tar: {err}") from err
    if not is_safe_name(manifest.get("version")):
        raise BundleError(f"bundle version {manifest.get('version')!r} is not a safe name")
    return manifest

