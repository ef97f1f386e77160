"""The collector's HTTP API (FastAPI): ``create_app(store, settings)``.

Devices (each with its own bearer token) post heartbeats, decision batches, samples and
update outcomes under ``/api/v1/devices/{device}/...`` and may write only their own
records; they read the model they should run and download its bundle. The admin token
(the ``edgectl fleet`` CLI) registers devices and bundles, sets desired versions and
reads fleet status. OpenAPI (``/openapi.json``, ``/docs``, ``/redoc``) only with
``Settings.api_docs`` (``edgectl serve --api-docs``).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, field_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_common.errors import BundleError
from edge_common.fileio import write_bytes_atomic
from edgectl.collector import status as fleet_status
from edgectl.collector.auth import Principal, hash_token, new_token, tokens_match
from edgectl.collector.bundles import read_tar_manifest
from edgectl.collector.names import check_name, is_safe_name
from edgectl.collector.settings import DIR_MODE, FILE_MODE, Settings
from edgectl.collector.store import DuplicateError, Store

API = "/api/v1"
IMAGE_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}
EXTENSIONS = {"JPEG": "jpg", "PNG": "png"}
CHUNK = 64 * 1024


# -- request bodies ----------------------------------------------------------------------


def _safe(value: str, what: str) -> str:
    return check_name(value, what)


class Heartbeat(BaseModel):
    """``Agent.snapshot()``: what the board reports about itself."""

    model_config = ConfigDict(extra="allow")
    device_id: str | None = None
    model_version: str | None = None
    uptime_s: float | None = None
    fps: float | None = None
    latency_ms: dict[str, Any] | None = None
    deadline_misses: int | None = None
    counts: dict[str, Any] | None = None
    disk_bytes: int | None = None
    temperature_c: float | None = None


class DecisionRecord(BaseModel):
    """One journal row; ``id`` is its unique id (the idempotence key)."""

    model_config = ConfigDict(extra="allow")
    id: str

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _safe(v, "record id")


class DecisionBatch(BaseModel):
    """Journal rows; each needs a safe unique ``id`` (checked in the handler: validating
    plain dicts is several times cheaper than a model per record, the hot path)."""

    device_id: str | None = None
    records: list[dict[str, Any]]


class BatchResult(BaseModel):
    received: int
    accepted: int
    duplicates: int


class UpdateReport(BaseModel):
    """A board's outcome for one update attempt; ``id`` makes repeats harmless."""

    model_config = ConfigDict(extra="allow")
    id: str
    version: str | None = None
    outcome: Literal["applied", "refused", "rolled_back"]
    reason: str | None = None
    previous_version: str | None = None
    ts: float | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _safe(v, "report id")


class NewDevice(BaseModel):
    name: str
    group: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _safe(v, "device name")

    @field_validator("group")
    @classmethod
    def _group(cls, v: str | None) -> str | None:
        return None if v is None else _safe(v, "group name")


class DesiredModel(BaseModel):
    version: str
    allow_downgrade: bool = False

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        return _safe(v, "bundle version")


# -- body size limit ---------------------------------------------------------------------


class BodyLimit:
    """Refuse JSON bodies over ``limit`` bytes (413), by Content-Length or while streaming.

    Sample and bundle uploads stream their own bodies with their own limits.
    """

    def __init__(self, app: ASGIApp, limit: int, exempt_suffixes: tuple[str, ...]) -> None:
        self.app, self.limit, self.exempt = app, limit, exempt_suffixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _exempt(scope["path"], scope["method"], self.exempt):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _send_json(send, 413, b'{"detail":"request body too large"}')
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, "request body too large")
            return msg

        await self.app(scope, limited, send)


def _exempt(path: str, method: str, suffixes: tuple[str, ...]) -> bool:
    if method == "PUT" and "/samples/" in path:
        return True
    return method == "POST" and path.rstrip("/").endswith(suffixes)


async def _send_json(send: Send, code: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": code,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# -- who is calling ----------------------------------------------------------------------

bearer = HTTPBearer(auto_error=False, description="device token or admin token")


def principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The admin or the device whose token is in ``Authorization: Bearer``; else 401."""
    unauthorized = {"WWW-Authenticate": "Bearer"}
    if creds is None or not creds.credentials:
        raise HTTPException(401, "missing bearer token", headers=unauthorized)
    token = creds.credentials
    if tokens_match(token, request.app.state.settings.admin_token_hash):
        return Principal(admin=True)
    device = request.app.state.store.device_for_token_hash(hash_token(token))
    if device is None:
        raise HTTPException(401, "invalid token", headers=unauthorized)
    return Principal(admin=False, device=device)


def admin(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.admin:
        raise HTTPException(403, "admin token required")
    return who


def this_device(device: str, who: Annotated[Principal, Depends(principal)]) -> str:
    """The ``{device}`` of the URL, which must be the caller's own (else 403)."""
    if not is_safe_name(device):
        raise HTTPException(400, "invalid device name")
    if who.device != device:
        raise HTTPException(403, f"this token may not act as device {device!r}")
    return device


Device = Annotated[str, Depends(this_device)]
Admin = Annotated[Principal, Depends(admin)]


# -- the app -----------------------------------------------------------------------------


def create_app(store: Store, settings: Settings) -> FastAPI:
    """The collector app over ``store``; files (samples, bundles) under ``settings.data_dir``."""
    docs = settings.api_docs  # off by default: no unauthenticated map of the API
    app = FastAPI(title="edgectl collector", version="1",
                  description="Boards sync decisions, samples and heartbeats; pull their model.",
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)
    app.add_middleware(BodyLimit, limit=settings.max_json_bytes,  # type: ignore[arg-type]
                       exempt_suffixes=(f"{API}/bundles",))
    settings.samples_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    settings.bundles_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    app.state.store = store
    app.state.settings = settings

    # -- open ------------------------------------------------------------------------

    @app.get(f"{API}/health", tags=["meta"])
    def get_health() -> dict[str, Any]:
        """Liveness, no token needed."""
        return {"ok": True, "api": 1}

    # -- device endpoints ------------------------------------------------------------

    @app.post(f"{API}/devices/{{device}}/heartbeat", tags=["device"])
    def post_heartbeat(device: Device, body: Heartbeat) -> dict[str, Any]:
        """Record the board's snapshot; answers with the version it should run."""
        if body.device_id not in (None, device):
            raise HTTPException(403, "heartbeat device_id does not match the token's device")
        store.record_heartbeat(device, body.model_dump())
        desired = store.desired_for(device)
        return {"ok": True, "desired_version": desired["version"] if desired else None}

    @app.post(f"{API}/devices/{{device}}/decisions", tags=["device"])
    def post_decisions(device: Device, batch: DecisionBatch) -> BatchResult:
        """Store a batch of journal rows; a repeated id is accepted, not stored twice."""
        if batch.device_id not in (None, device):
            raise HTTPException(403, "batch device_id does not match the token's device")
        if len(batch.records) > settings.max_batch_records:
            raise HTTPException(413, f"at most {settings.max_batch_records} records per batch")
        records = batch.records
        for r in records:
            if not is_safe_name(r.get("id")):
                raise HTTPException(422, f"invalid record id {r.get('id')!r}")
            if r.get("device_id", device) != device:
                raise HTTPException(403, f"record {r['id']} belongs to another device")
        accepted, duplicates = store.add_decisions(device, records)
        return BatchResult(received=len(records), accepted=accepted, duplicates=duplicates)

    @app.put(f"{API}/devices/{{device}}/samples/{{sample_id}}", tags=["device"],
             openapi_extra={"requestBody": {"required": True, "content": {
                 "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                 "image/png": {"schema": {"type": "string", "format": "binary"}}}}})
    async def put_sample(device: Device, sample_id: str, request: Request) -> dict[str, Any]:
        """Upload the image of decision ``sample_id`` (raw JPEG/PNG body, size-limited,
        decoded with Pillow before it is kept). A repeat is accepted, not stored twice."""
        if not is_safe_name(sample_id):
            raise HTTPException(400, "invalid sample id")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in IMAGE_TYPES:
            raise HTTPException(415, "sample must be image/jpeg or image/png")
        data = await _read_limited(request, settings.max_sample_bytes, "sample")
        if await run_in_threadpool(store.has_sample, device, sample_id):
            return {"stored": False, "duplicate": True}
        fmt = await run_in_threadpool(_check_image, data, settings.max_sample_pixels)
        if fmt != IMAGE_TYPES[ctype]:
            raise HTTPException(415, f"content is {fmt}, not {ctype}")
        path = _inside(settings.samples_dir, device, f"{sample_id}.{EXTENSIONS[fmt]}")
        await run_in_threadpool(write_bytes_atomic, path, data, FILE_MODE)
        rel = path.relative_to(settings.data_dir).as_posix()
        new = await run_in_threadpool(store.add_sample, device, sample_id, rel, len(data), ctype)
        return {"stored": new, "duplicate": not new}

    @app.get(f"{API}/devices/{{device}}/desired", tags=["device"])
    def get_desired(device: Device) -> dict[str, Any]:
        """The bundle version this device should run (its own setting, else its group's)."""
        d = store.desired_for(device)
        if d is None:
            return {"device": device, "version": None}
        return {"device": device, "version": d["version"], "sha256": d["sha256"],
                "bytes": d["bytes"], "source": d["kind"],
                "allow_downgrade": d["allow_downgrade"]}

    @app.get(f"{API}/devices/{{device}}/bundle", tags=["device"],
             response_class=FileResponse,
             responses={200: {"content": {"application/x-tar": {}},
                              "description": "the desired bundle; X-Bundle-SHA256 header"}})
    def get_bundle(device: Device) -> FileResponse:
        """Stream the desired bundle's ``.tar``; its sha256 and version are in headers."""
        d = store.desired_for(device)
        if d is None:
            raise HTTPException(404, "no model is set for this device")
        path = _inside(settings.bundles_dir, d["filename"])
        if not path.is_file():
            raise HTTPException(410, "bundle file is missing on the collector")
        return FileResponse(path, media_type="application/x-tar",
                            filename=f"{d['version']}.tar",
                            headers={"X-Bundle-Version": d["version"],
                                     "X-Bundle-SHA256": d["sha256"]})

    @app.post(f"{API}/devices/{{device}}/updates", tags=["device"])
    def post_update(device: Device, report: UpdateReport) -> dict[str, Any]:
        """The board's outcome for an update: applied, refused (why) or rolled back (why)."""
        new = store.add_update_report(device, report.model_dump())
        return {"stored": new, "duplicate": not new}

    # -- admin endpoints -------------------------------------------------------------

    @app.post(f"{API}/devices", tags=["admin"], status_code=status.HTTP_201_CREATED)
    def add_device(body: NewDevice, _: Admin) -> dict[str, Any]:
        """Register a device; its token is returned once and only its hash is kept."""
        token = new_token()
        try:
            store.add_device(body.name, body.group, hash_token(token))
        except DuplicateError as err:
            raise HTTPException(409, str(err.args[0])) from err
        return {"name": body.name, "group": body.group, "token": token}

    @app.post(f"{API}/devices/{{name}}/token", tags=["admin"])
    def rotate_token(name: str, _: Admin) -> dict[str, Any]:
        """Issue a new token for a device; the old one stops working."""
        token = new_token()
        if not is_safe_name(name) or not store.set_device_token(name, hash_token(token)):
            raise HTTPException(404, "unknown device")
        return {"name": name, "token": token}

    @app.get(f"{API}/devices", tags=["admin"])
    def list_devices(_: Admin) -> list[dict[str, Any]]:
        return [{k: d[k] for k in ("name", "group", "created", "last_seen")}
                for d in store.devices()]

    @app.get(f"{API}/devices/{{name}}/decisions", tags=["admin"])
    def list_decisions(name: str, _: Admin, after_seq: int = -1,
                       limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> list[dict[str, Any]]:
        if not is_safe_name(name):
            raise HTTPException(400, "invalid device name")
        return store.decisions(name, limit=limit, after_seq=after_seq)

    @app.get(f"{API}/devices/{{name}}/updates", tags=["admin"])
    def list_updates(name: str, _: Admin,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> list[dict[str, Any]]:
        if not is_safe_name(name):
            raise HTTPException(400, "invalid device name")
        return store.update_reports(name, limit=limit)

    @app.post(f"{API}/bundles", tags=["admin"],
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}})
    async def upload_bundle(request: Request, _: Admin) -> dict[str, Any]:
        """Register a bundle ``.tar`` (raw body). Its version comes from its manifest."""
        return await _store_bundle(request, store, settings)

    @app.get(f"{API}/bundles", tags=["admin"])
    def list_bundles(_: Admin) -> list[dict[str, Any]]:
        return store.bundles()

    @app.put(f"{API}/desired/{{kind}}/{{target}}", tags=["admin"])
    def put_desired(kind: Literal["device", "group"], target: str, body: DesiredModel,
                    _: Admin) -> dict[str, Any]:
        """Set the model a device or a group should run."""
        if not is_safe_name(target):
            raise HTTPException(400, f"invalid {kind} name")
        if kind == "device" and store.device(target) is None:
            raise HTTPException(404, f"unknown device {target!r}")
        try:
            store.set_desired(kind, target, body.version, allow_downgrade=body.allow_downgrade)
        except KeyError as err:
            raise HTTPException(404, str(err.args[0])) from err
        return {"kind": kind, "target": target, "version": body.version,
                "allow_downgrade": body.allow_downgrade}

    @app.get(f"{API}/desired", tags=["admin"])
    def list_desired(_: Admin) -> list[dict[str, Any]]:
        return store.desired()

    @app.get(f"{API}/fleet/status", tags=["admin"])
    def get_fleet_status(_: Admin) -> list[dict[str, Any]]:
        """One row per device: last seen, model, fps, p95, counts, backlog, health."""
        now = time.time()
        stats = store.decision_stats()
        rows = []
        for d in store.devices():
            updates = store.update_reports(d["name"], limit=1)
            rows.append(fleet_status.fleet_row(
                d, store.desired_for(d["name"]), stats.get(d["name"]),
                updates[0] if updates else None, now, settings.stale_after_s))
        return rows

    return app


# -- helpers -----------------------------------------------------------------------------


async def _read_limited(request: Request, limit: int, what: str) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"{what} larger than {limit} bytes")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise HTTPException(413, f"{what} larger than {limit} bytes")
    if not buf:
        raise HTTPException(400, f"empty {what}")
    return bytes(buf)


def _check_image(data: bytes, max_pixels: int) -> str:
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
                raise HTTPException(422, f"image of {w}x{h} pixels is over the limit of "
                                         f"{max_pixels} pixels")
            im.load()
            return str(im.format)
    except HTTPException:
        raise
    except Image.DecompressionBombError as err:
        raise HTTPException(422, f"image refused as a decompression bomb: {err}") from err
    except Exception as err:  # noqa: BLE001 - any decoder failure is the sender's bad image
        raise HTTPException(422, f"sample is not a decodable image: "
                                 f"{type(err).__name__}: {err}") from err


def _inside(root: Path, *parts: str) -> Path:
    """``root/parts...``, refusing anything that would leave ``root`` (belt and braces)."""
    for p in parts:
        if not is_safe_name(p):
            raise HTTPException(400, "invalid name")
    path = root.joinpath(*parts)
    if not path.resolve().is_relative_to(root.resolve()):
        raise HTTPException(400, "invalid name")
    return path


async def _store_bundle(request: Request, store: Store, settings: Settings) -> dict[str, Any]:
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
            raise HTTPException(422, str(err)) from err
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
