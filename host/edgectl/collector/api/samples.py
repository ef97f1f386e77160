"""``PUT /devices/{device}/samples/{sample_id}``: the image of one decision.

The body is raw JPEG/PNG, size-limited while it is read, decoded with Pillow before it is
kept. The file is written to a temp name and hard-linked into place, so it appears whole
and the first writer wins even when several workers receive the same sample at once.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError

from edgectl.collector.api.deps import Device, SettingsDep, StoreDep, inside
from edgectl.collector.api.errors import invalid
from edgectl.collector.api.limits import read_limited
from edgectl.collector.names import is_safe_name
from edgectl.collector.settings import FILE_MODE

IMAGE_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}
EXTENSIONS = {"JPEG": "jpg", "PNG": "png"}

router = APIRouter(tags=["device"])


@router.put("/devices/{device}/samples/{sample_id}",
            openapi_extra={"requestBody": {"required": True, "content": {
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "image/png": {"schema": {"type": "string", "format": "binary"}}}}})
async def put_sample(device: Device, sample_id: str, request: Request, store: StoreDep,
                     settings: SettingsDep) -> dict[str, Any]:
    """Upload the image of decision ``sample_id`` (raw JPEG/PNG body, size-limited,
    decoded with Pillow before it is kept). A repeat is accepted, not stored twice."""
    if not is_safe_name(sample_id):
        raise HTTPException(400, "invalid sample id")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in IMAGE_TYPES:
        raise HTTPException(415, "sample must be image/jpeg or image/png")
    data = await read_limited(request, settings.max_sample_bytes, "sample")
    if await run_in_threadpool(store.has_sample, device, sample_id):
        return {"stored": False, "duplicate": True}
    fmt = await run_in_threadpool(check_image, data, settings.max_sample_pixels)
    if fmt != IMAGE_TYPES[ctype]:
        raise HTTPException(415, f"content is {fmt}, not {ctype}")
    path = inside(settings.samples_dir, device, f"{sample_id}.{EXTENSIONS[fmt]}")
    await run_in_threadpool(write_new_file, path, data, FILE_MODE)
    rel = path.relative_to(settings.data_dir).as_posix()
    new = await run_in_threadpool(store.add_sample, device, sample_id, rel, len(data), ctype)
    return {"stored": new, "duplicate": not new}


def write_new_file(path: Path, data: bytes, mode: int) -> bool:
    """Write ``path`` whole (temp file, fsync, hard link) unless it exists; True if written.

    ``os.link`` fails when the name exists, so of several workers writing the same
    sample at once exactly one wins and nobody sees a half-written file.
    """
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return True
    finally:
        os.unlink(tmp)


def check_image(data: bytes, max_pixels: int) -> str:
    """Decode ``data`` fully with Pillow; return its format.

    422 when it has more than ``max_pixels`` pixels (read from the header, before any
    pixel is decoded) or cannot be decoded; never a 500. Pillow's own guard,
    ``Image.MAX_IMAGE_PIXELS`` (``DecompressionBombError`` at twice that, raised inside
    ``Image.open``), stays on as a second line; ``max_pixels`` is the tighter one.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in EXTENSIONS:
                raise HTTPException(415, f"unsupported image format {im.format}")
            w, h = im.size
            if w * h > max_pixels:
                raise invalid(("body",), f"image of {w}x{h} pixels is over the limit of "
                                         f"{max_pixels} pixels")
            im.load()
            return str(im.format)
    except (HTTPException, RequestValidationError):
        raise
    except Image.DecompressionBombError as err:
        raise invalid(("body",), f"image refused as a decompression bomb: {err}") from err
    except Exception as err:  # noqa: BLE001 - any decoder failure is the sender's bad image
        raise invalid(("body",), f"sample is not a decodable image: "
                                 f"{type(err).__name__}: {err}") from err
