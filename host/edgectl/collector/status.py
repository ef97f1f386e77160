"""Fleet status rows from what devices last reported: pure functions, no I/O."""

from __future__ import annotations

from typing import Any

from edgectl.collector.values import count, number, obj, text

MAX_DEADLINE_MISS_RATIO = 0.01
MAX_UNSENT_BACKLOG = 5000
MAX_TEMPERATURE_C = 80.0


def health(row: dict[str, Any], now: float, stale_after_s: float) -> tuple[str, list[str]]:
    """``("ok" | "stale" | "degraded", reasons)`` for one fleet row.

    stale: not heard from in ``stale_after_s``; degraded: heard from, but the last update
    for the desired model failed, too many deadline misses, a growing backlog or heat.
    """
    if row.get("last_seen") is None:
        return "stale", ["never seen"]
    age = now - float(row["last_seen"])
    if age > stale_after_s:
        return "stale", [f"last seen {age:.0f}s ago"]
    reasons: list[str] = []
    upd = row.get("last_update") or {}
    if (upd.get("outcome") in ("refused", "rolled_back")
            and upd.get("version") == row.get("desired_version")
            and row.get("model_version") != row.get("desired_version")):
        reasons.append(f"update to {upd.get('version')} {upd.get('outcome')}: {upd.get('reason')}")
    total = row.get("total") or 0
    misses = row.get("deadline_misses") or 0
    if total and misses / total > MAX_DEADLINE_MISS_RATIO:
        reasons.append(f"deadline misses {misses}/{total}")
    if (row.get("unsent") or 0) > MAX_UNSENT_BACKLOG:
        reasons.append(f"unsent backlog {row['unsent']}")
    temp = row.get("temperature_c")
    if temp is not None and temp >= MAX_TEMPERATURE_C:
        reasons.append(f"temperature {temp:.0f}C")
    if reasons:
        return "degraded", reasons
    if row.get("desired_version") and row.get("model_version") != row.get("desired_version"):
        return "ok", [f"update to {row['desired_version']} pending"]
    return "ok", []


def _p95(latency: Any) -> float | None:
    return number(obj(obj(latency).get("total")).get("p95"))


def _update(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The last update report's fields a row shows, each as its type or None."""
    if report is None:
        return None
    return {"id": text(report.get("id")), "version": text(report.get("version")),
            "outcome": text(report.get("outcome")), "reason": text(report.get("reason")),
            "previous_version": text(report.get("previous_version")),
            "ts": number(report.get("ts")), "received": number(report.get("received"))}


def fleet_row(device: dict[str, Any], desired: dict[str, Any] | None,
              received: dict[str, int] | None, last_update: dict[str, Any] | None,
              now: float, stale_after_s: float) -> dict[str, Any]:
    """One device's row of ``edgectl fleet status``. Every heartbeat value is read as the
    type the row holds (``values``): one a board sent wrong is None, not an error."""
    hb = obj(device.get("heartbeat"))
    counts = obj(hb.get("counts"))
    last_seen = number(device.get("last_seen"))
    misses = count(hb.get("deadline_misses"))
    row: dict[str, Any] = {
        "device": device["name"],
        "group": device.get("group"),
        "last_seen": last_seen,
        "age_s": None if last_seen is None else round(now - last_seen, 1),
        "model_version": text(hb.get("model_version"), 128),
        "desired_version": desired["version"] if desired else None,
        "fps": number(hb.get("fps")),
        "p95_ms": _p95(hb.get("latency_ms")),
        "total": count(counts.get("total")),
        "rejects": count(counts.get("reject")),
        "reviews": count(counts.get("review")),
        "deadline_misses": misses if misses is not None else count(counts.get("deadline_misses")),
        "unsent": count(counts.get("unsent")),
        "temperature_c": number(hb.get("temperature_c")),
        "received": (received or {}).get("received", 0),
        "last_update": _update(last_update),
    }
    row["health"], row["reasons"] = health(row, now, stale_after_s)
    return row
