"""Who is calling, and what the handlers share: the store, the settings, safe paths.

Handlers get the store and settings from ``request.app.state`` through these
dependencies, so every router is a plain module with no closure over the app. The ones
that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency on a thread of
its pool, a hop that cost more than the dependency itself on every request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from edgectl.collector.auth import Principal, hash_token, tokens_match
from edgectl.collector.names import is_safe_name
from edgectl.collector.settings import Settings
from edgectl.collector.store import Store

bearer = HTTPBearer(auto_error=False, description="device token or admin token")


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def principal(
    store: StoreDep,
    settings: SettingsDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The admin or the device whose token is in ``Authorization: Bearer``; else 401.

    A device token this worker looked up in the last ``Store.token_ttl_s`` seconds is
    answered from memory, without a thread hop or a query; otherwise the database decides
    (on a thread). A rotated token is refused within that bound by every worker.
    """
    unauthorized = {"WWW-Authenticate": "Bearer"}
    if creds is None or not creds.credentials:
        raise HTTPException(401, "missing bearer token", headers=unauthorized)
    token = creds.credentials
    if tokens_match(token, settings.admin_token_hash):
        return Principal(admin=True)
    token_hash = hash_token(token)
    device = store.cached_device(token_hash) or \
        await run_in_threadpool(store.device_for_token_hash, token_hash)
    if device is None:
        raise HTTPException(401, "invalid token", headers=unauthorized)
    return Principal(admin=False, device=device)


async def admin(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.admin:
        raise HTTPException(403, "admin token required")
    return who


async def this_device(device: str, who: Annotated[Principal, Depends(principal)]) -> str:
    """The ``{device}`` of the URL, which must be the caller's own (else 403)."""
    if not is_safe_name(device):
        raise HTTPException(400, "invalid device name")
    if who.device != device:
        raise HTTPException(403, f"this token may not act as device {device!r}")
    return device


Device = Annotated[str, Depends(this_device)]
Admin = Annotated[Principal, Depends(admin)]


def safe_name(name: str, what: str = "device name") -> str:
    """``name`` if it is a safe name, else 400."""
    if not is_safe_name(name):
        raise HTTPException(400, f"invalid {what}")
    return name


def inside(root: Path, *parts: str) -> Path:
    """``root/parts...``, refusing anything that would leave ``root`` (belt and braces)."""
    for p in parts:
        if not is_safe_name(p):
            raise HTTPException(400, "invalid name")
    path = root.joinpath(*parts)
    if not path.resolve().is_relative_to(root.resolve()):
        raise HTTPException(400, "invalid name")
    return path
