"""Decisions: boards post batches of journal rows (idempotent by ``(device, id)``); the
admin reads them back."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from edgectl.collector.api.batch_body import parse_batch
from edgectl.collector.api.deps import Admin, Device, SettingsDep, StoreDep, safe_name
from edgectl.collector.api.schemas import BatchResult, DecisionBatch

router = APIRouter()

# The body is parsed by hand (below), so its schema goes into the OpenAPI document by
# hand: the batch at the route, the models it refers to among the components (``app``).
_SCHEMA = DecisionBatch.model_json_schema(ref_template="#/components/schemas/{model}")
BODY_COMPONENTS: dict[str, Any] = _SCHEMA.pop("$defs", {})
_BODY_DOC = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _SCHEMA}}}}


@router.post("/devices/{device}/decisions", tags=["device"], openapi_extra=_BODY_DOC)
async def post_decisions(device: Device, request: Request, store: StoreDep,
                         settings: SettingsDep) -> BatchResult:
    """Store a batch of journal rows; a repeated id is accepted, not stored twice.

    The body is parsed here rather than by FastAPI so that the store also gets each
    record's JSON text as sent and keeps it without serialising it again (the hot path
    of a fleet's collector: see ``batch_body`` and ``store/pghot.py``); every record is
    still validated by ``DecisionRecord`` first.
    """
    batch, records, texts = parse_batch(await request.body())
    if batch.device_id not in (None, device):
        raise HTTPException(403, "batch device_id does not match the token's device")
    if len(records) > settings.max_batch_records:
        raise HTTPException(413, f"at most {settings.max_batch_records} records per batch")
    for r in batch.records:
        if r.device_id not in (None, device):
            raise HTTPException(403, f"record {r.id} belongs to another device")
    accepted, duplicates = await run_in_threadpool(store.add_decisions, device, records,
                                                   texts=texts)
    return BatchResult(received=len(records), accepted=accepted, duplicates=duplicates)


@router.get("/devices/{name}/decisions", tags=["admin"])
def list_decisions(name: str, _: Admin, store: StoreDep, after_seq: int = -1,
                   limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> list[dict[str, Any]]:
    return store.decisions(safe_name(name), limit=limit, after_seq=after_seq)
