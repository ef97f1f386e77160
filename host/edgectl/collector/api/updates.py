"""Update reports: a board's outcome for one update attempt (idempotent by ``id``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from edgectl.collector.api.deps import Admin, Device, StoreDep, safe_name
from edgectl.collector.api.schemas import UpdateReport

router = APIRouter()


@router.post("/devices/{device}/updates", tags=["device"])
def post_update(device: Device, report: UpdateReport, store: StoreDep) -> dict[str, Any]:
    """The board's outcome for an update: applied, refused (why) or rolled back (why)."""
    new = store.add_update_report(device, report.model_dump(exclude_unset=True))
    return {"stored": new, "duplicate": not new}


@router.get("/devices/{name}/updates", tags=["admin"])
def list_updates(name: str, _: Admin, store: StoreDep,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> list[dict[str, Any]]:
    return store.update_reports(safe_name(name), limit=limit)
