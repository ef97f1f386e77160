"""``GET /fleet/status``: one row per device (the rows of ``edgectl fleet status`` and of
the fleet page)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from edgectl.collector import status as fleet_status
from edgectl.collector.api.deps import Admin, SettingsDep, StoreDep
from edgectl.collector.store import Store

router = APIRouter(tags=["admin"])


def fleet_rows(store: Store, stale_after_s: float, now: float | None = None,
               received: bool = True) -> list[dict[str, Any]]:
    """Every device's status row, in a fixed number of queries whatever the fleet's size.
    ``received`` adds the count of decisions stored per device (a count over the whole
    decisions table: the CLI's rows have it, the fleet page does not need it)."""
    now = time.time() if now is None else now
    stats = store.decision_stats() if received else {}
    updates = store.last_update_reports()
    desired = {(d["kind"], d["target"]): d for d in store.desired()}
    rows = []
    for d in store.devices():
        want = desired.get(("device", d["name"])) or desired.get(("group", d["group"]))
        rows.append(fleet_status.fleet_row(d, want, stats.get(d["name"]),
                                           updates.get(d["name"]), now, stale_after_s))
    return rows


@router.get("/fleet/status")
def get_fleet_status(_: Admin, store: StoreDep, settings: SettingsDep) -> list[dict[str, Any]]:
    """One row per device: last seen, model, fps, p95, counts, backlog, health."""
    return fleet_rows(store, settings.stale_after_s)
