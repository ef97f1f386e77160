"""Decisions: boards post batches of journal rows (idempotent by ``(device, id)``); the
admin reads them back."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from edgectl.collector.api.deps import Admin, Device, SettingsDep, StoreDep, safe_name
from edgectl.collector.api.schemas import BatchResult, DecisionBatch
from edgectl.collector.names import is_safe_name

router = APIRouter()


@router.post("/devices/{device}/decisions", tags=["device"])
def post_decisions(device: Device, batch: DecisionBatch, store: StoreDep,
                   settings: SettingsDep) -> BatchResult:
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


@router.get("/devices/{name}/decisions", tags=["admin"])
def list_decisions(name: str, _: Admin, store: StoreDep, after_seq: int = -1,
                   limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> list[dict[str, Any]]:
    return store.decisions(safe_name(name), limit=limit, after_seq=after_seq)
