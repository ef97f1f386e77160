"""``GET /fleet/status``: one row per device (the rows of ``edgectl fleet status``)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from edgectl.collector import status as fleet_status
from edgectl.collector.api.deps import Admin, SettingsDep, StoreDep

router = APIRouter(tags=["admin"])


@router.get("/fleet/status")
def get_fleet_status(_: Admin, store: StoreDep, settings: SettingsDep) -> list[dict[str, Any]]:
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
