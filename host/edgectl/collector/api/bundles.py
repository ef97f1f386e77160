"""Bundles: the admin uploads and lists them; a board downloads its desired one.

An upload streams to a temp file while it is hashed, is checked (``read_tar_manifest``),
then kept as ``bundles/<sha256>.tar``: a name that only ever holds those bytes, so
several workers storing the same bundle at once write the same file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import ValidationError

from edge_common.errors import BundleError
from edgectl.collector.api.deps import Admin, Device, SettingsDep, StoreDep, inside
from edgectl.collector.api.errors import invalid
from edgectl.collector.api.schemas import ShownManifest
from edgectl.collector.bundles import read_tar_manifest
from edgectl.collector.settings import Settings
from edgectl.collector.store import DuplicateError, Store

router = APIRouter()


@router.get("/devices/{device}/bundle", tags=["device"], response_class=FileResponse,
            responses={200: {"content": {"application/x-tar": {}},
                             "description": "the desired bundle; X-Bundle-SHA256 header"}})
def get_bundle(device: Device, store: StoreDep, settings: SettingsDep) -> FileResponse:
    """Stream the desired bundle's ``.tar``; its sha256 and version are in headers."""
    d = store.desired_for(device)
    if d is None:
        raise HTTPException(404, "no model is set for this device")
    path = inside(settings.bundles_dir, d["filename"])
    if not path.is_file():
        raise HTTPException(410, "bundle file is missing on the collector")
    return FileResponse(path, media_type="application/x-tar", filename=f"{d['version']}.tar",
                        headers={"X-Bundle-Version": d["version"],
                                 "X-Bundle-SHA256": d["sha256"]})


@router.post("/bundles", tags=["admin"],
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload_bundle(request: Request, _: Admin, store: StoreDep,
                        settings: SettingsDep) -> dict[str, Any]:
    """Register a bundle ``.tar`` (raw body). Its version comes from its manifest."""
    return await store_bundle(request, store, settings)


@router.get("/bundles", tags=["admin"])
def list_bundles(_: Admin, store: StoreDep) -> list[dict[str, Any]]:
    return store.bundles()


def check_manifest(manifest: dict[str, Any]) -> None:
    """422 naming the field (``manifest.metrics.accuracy``) when a manifest field the
    models page shows is not what it shows (a number where it shows a number)."""
    try:
        ShownManifest.model_validate(manifest)
    except ValidationError as err:
        raise RequestValidationError(
            [{**e, "loc": ("manifest", *e["loc"])} for e in err.errors(include_url=False)]
        ) from err


async def store_bundle(request: Request, store: Store, settings: Settings) -> dict[str, Any]:
    """Stream an uploaded tar to a temp file (hashing it), check it, then keep it by sha256."""
    limit = settings.max_bundle_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"bundle larger than {limit} bytes")
    digest, size = hashlib.sha256(), 0
    fd, tmp_name = tempfile.mkstemp(prefix=".upload.", suffix=".tar", dir=settings.bundles_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"bundle larger than {limit} bytes")
                digest.update(chunk)
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        if size == 0:
            raise HTTPException(400, "empty bundle")
        try:
            manifest = await run_in_threadpool(read_tar_manifest, tmp)
        except BundleError as err:
            raise invalid(("body",), str(err)) from err
        check_manifest(manifest)
        sha = digest.hexdigest()
        filename = f"{sha}.tar"
        final = settings.bundles_dir / filename
        moved = not final.exists()
        if moved:
            os.replace(tmp, final)
        try:
            created = await run_in_threadpool(store.add_bundle, manifest["version"],
                                              manifest.get("name"), filename, sha, size, manifest)
        except DuplicateError as err:
            if moved:
                final.unlink(missing_ok=True)
            raise HTTPException(409, str(err.args[0])) from err
        return {"version": manifest["version"], "name": manifest.get("name"), "sha256": sha,
                "bytes": size, "created": created}
    finally:
        tmp.unlink(missing_ok=True)
