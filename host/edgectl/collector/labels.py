"""Unpack the review labels' zip (``GET /review/export.zip``) into an image folder.

The archive comes from a collector, over the network: every member is checked before
anything is written (``<class>/<file>`` with safe names and an image suffix, or
``labels.csv``; sizes bounded), it is unpacked into a temp folder beside ``out`` and
renamed into place, so a refused or broken archive leaves nothing half-written and an
existing folder is never mixed with a new export.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from edge_common.errors import EdgeError
from edgectl.collector.names import is_safe_name

MAX_MEMBER_BYTES = 64 * 1024 * 1024
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


class LabelExportError(EdgeError, ValueError):
    """The label archive is not what the collector writes, or the folder is taken."""


def unpack_labels(data: bytes, out: str | os.PathLike[str]) -> dict[str, int]:
    """Write the archive ``data`` to the new folder ``out``; return images per class."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LabelExportError(f"{out} exists and is not empty: choose a new folder")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as err:
        raise LabelExportError(f"the label export is not a zip archive: {err}") from err
    counts: dict[str, int] = {}
    with zf:
        for info in zf.infolist():
            name = PurePosixPath(info.filename)
            if info.is_dir():
                continue
            if info.file_size > MAX_MEMBER_BYTES:
                raise LabelExportError(f"{info.filename}: {info.file_size} bytes is too large")
            if str(name) == "labels.csv":
                continue
            if (len(name.parts) != 2 or not all(is_safe_name(p) for p in name.parts)
                    or name.suffix.lower() not in IMAGE_SUFFIXES):
                raise LabelExportError(f"unexpected member {info.filename!r} in the export")
            counts[name.parts[0]] = counts.get(name.parts[0], 0) + 1
        if not counts:
            raise LabelExportError("the export holds no labelled images")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            zf.extractall(tmp)
            if out.exists():
                out.rmdir()  # empty, checked above
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return counts
