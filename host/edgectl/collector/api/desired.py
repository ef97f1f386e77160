"""Desired models: what a board should run (its own setting, else its group's)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException

from edgectl.collector.api.deps import Admin, Device, StoreDep
from edgectl.collector.api.schemas import DesiredModel
from edgectl.collector.names import is_safe_name

router = APIRouter()


@router.get("/devices/{device}/desired", tags=["device"])
def get_desired(device: Device, store: StoreDep) -> dict[str, Any]:
    """The bundle version this device should run (its own setting, else its group's)."""
    d = store.desired_for(device)
    if d is None:
        return {"device": device, "version": None}
    return {"device": device, "version": d["version"], "sha256": d["sha256"],
            "bytes": d["bytes"], "source": d["kind"], "allow_downgrade": d["allow_downgrade"]}


@router.put("/desired/{kind}/{target}", tags=["admin"])
def put_desired(kind: Literal["device", "group"], target: str, body: DesiredModel, _: Admin,
                store: StoreDep) -> dict[str, Any]:
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


@router.get("/desired", tags=["admin"])
def list_desired(_: Admin, store: StoreDep) -> list[dict[str, Any]]:
    return store.desired()
