"""Devices (admin): register one (its token shown once), rotate its token, list them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status

from edgectl.collector.api.deps import Admin, StoreDep
from edgectl.collector.api.schemas import NewDevice
from edgectl.collector.auth import hash_token, new_token
from edgectl.collector.names import is_safe_name
from edgectl.collector.store import DuplicateError

router = APIRouter(tags=["admin"])


@router.post("/devices", status_code=status.HTTP_201_CREATED)
def add_device(body: NewDevice, _: Admin, store: StoreDep) -> dict[str, Any]:
    """Register a device; its token is returned once and only its hash is kept."""
    token = new_token()
    try:
        store.add_device(body.name, body.group, hash_token(token))
    except DuplicateError as err:
        raise HTTPException(409, str(err.args[0])) from err
    return {"name": body.name, "group": body.group, "token": token}


@router.post("/devices/{name}/token")
def rotate_token(name: str, _: Admin, store: StoreDep) -> dict[str, Any]:
    """Issue a new token for a device; the old one stops working."""
    token = new_token()
    if not is_safe_name(name) or not store.set_device_token(name, hash_token(token)):
        raise HTTPException(404, "unknown device")
    return {"name": name, "token": token}


@router.get("/devices")
def list_devices(_: Admin, store: StoreDep) -> list[dict[str, Any]]:
    return [{k: d[k] for k in ("name", "group", "created", "last_seen")}
            for d in store.devices()]
