"""``POST /devices/{device}/heartbeat``: a board's snapshot of itself."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from edgectl.collector.api.deps import Device, StoreDep
from edgectl.collector.api.schemas import Heartbeat

router = APIRouter(tags=["device"])


@router.post("/devices/{device}/heartbeat")
def post_heartbeat(device: Device, body: Heartbeat, store: StoreDep) -> dict[str, Any]:
    """Record the board's snapshot; answers with the version it should run."""
    if body.device_id not in (None, device):
        raise HTTPException(403, "heartbeat device_id does not match the token's device")
    store.record_heartbeat(device, body.model_dump(exclude_unset=True))
    desired = store.desired_for(device)
    return {"ok": True, "desired_version": desired["version"] if desired else None}
