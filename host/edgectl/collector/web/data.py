"""What each fleet page shows, as plain data (the templates only lay it out).

Pure functions over the ``Store``'s reads: the fleet rows (the CLI's ``fleet status``
rows plus link state and the last minutes' rate), one device's history in time buckets,
the review queue, the models with the devices running each.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgectl.collector.api.fleet import fleet_rows
from edgectl.collector.store import Store
from edgectl.collector.values import count, number, obj, text

RATE_WINDOW_S = 600.0  # items/min and reject rate on the fleet page: the last 10 minutes
OFFLINE_AFTER_STALE = 5.0  # offline: not heard from in 5 × --stale-after (10 min default)
LOW_CONFIDENCE = 0.8  # the review queue: kept samples the model was less sure of than this
REJECT_KINDS = ("reject",)


def link_state(age_s: float | None, stale_after_s: float) -> str:
    """``online`` (heard from within ``stale_after_s``), ``stale``, or ``offline``."""
    if age_s is None:
        return "offline"
    if age_s <= stale_after_s:
        return "online"
    return "stale" if age_s <= OFFLINE_AFTER_STALE * stale_after_s else "offline"


def fleet(store: Store, stale_after_s: float, now: float | None = None) -> dict[str, Any]:
    """The fleet page: one row per device, and the totals over them."""
    now = time.time() if now is None else now
    recent = store.recent_counts(now - RATE_WINDOW_S)
    rows = fleet_rows(store, stale_after_s, now, received=False)
    devices = {d["name"]: d for d in store.devices()} if rows else {}
    for r in rows:
        counts = recent.get(r["device"], {})
        n = sum(counts.values())
        rejects = sum(counts.get(k, 0) for k in REJECT_KINDS)
        faults = obj(obj(devices[r["device"]].get("heartbeat")).get("faults"))
        r["link"] = link_state(r["age_s"], stale_after_s)
        r["items_per_min"] = round(n * 60.0 / RATE_WINDOW_S, 1)
        r["reject_rate"] = None if n == 0 else rejects / n
        r["faults"] = sorted(str(k) for k, v in faults.items() if v)
    links = [r["link"] for r in rows]
    return {"rows": rows, "now": now, "window_min": RATE_WINDOW_S / 60,
            "totals": {k: links.count(k) for k in ("online", "stale", "offline")},
            "degraded": sum(r["health"] == "degraded" for r in rows)}


def series(points: list[tuple[float, str, float | None, bool]], since: float, until: float,
           bucket_s: float) -> dict[str, list[Any]]:
    """Decisions in time buckets: items, rejects, reject rate, p95 latency, misses.

    ``points`` are ``(ts, decision, latency ms, missed)``; empty buckets are ``None`` in
    the rates (a gap in the chart, not a zero)."""
    edges = np.arange(since, until + bucket_s, bucket_s)
    n = len(edges) - 1
    out: dict[str, list[Any]] = {"t": [float(e) for e in edges[:-1]], "items": [0] * n,
                                 "rejects": [0] * n, "reject_rate": [None] * n,
                                 "p95_ms": [None] * n, "misses": [0] * n}
    if not points or n <= 0:
        return out
    ts = np.fromiter((p[0] for p in points), float, len(points))
    idx = np.clip(np.searchsorted(edges, ts, side="right") - 1, 0, n - 1)
    lat: list[list[float]] = [[] for _ in range(n)]
    for i, (_, kind, ms, missed) in zip(idx.tolist(), points, strict=True):
        out["items"][i] += 1
        out["rejects"][i] += kind in REJECT_KINDS
        out["misses"][i] += bool(missed)
        if ms is not None:
            lat[i].append(ms)
    for i in range(n):
        if out["items"][i]:
            out["reject_rate"][i] = round(100.0 * out["rejects"][i] / out["items"][i], 2)
        if lat[i]:
            out["p95_ms"][i] = round(float(np.percentile(lat[i], 95)), 3)
    return out


def device(store: Store, name: str, stale_after_s: float, hours: float,
           now: float | None = None) -> dict[str, Any] | None:
    """The device page: its status row, charts of the last ``hours``, recent decisions,
    update history, kept samples; None if there is no such device."""
    now = time.time() if now is None else now
    info = store.device(name)
    if info is None:
        return None
    row = next(r for r in fleet(store, stale_after_s, now)["rows"] if r["device"] == name)
    since = now - hours * 3600.0
    bucket_s = max(60.0, hours * 3600.0 / 72)  # about 72 points whatever the span
    points = store.decision_points(name, since)
    return {"row": row, "heartbeat": obj(info.get("heartbeat")), "hours": hours,
            "series": series(points, since, now, bucket_s), "bucket_s": bucket_s,
            "points": len(points),
            "decisions": [decision_row(x) for x in store.latest_decisions(name, 30)],
            "updates": [update_row(u) for u in store.update_reports(name, limit=20)],
            "samples": store.sample_rows(name, limit=48)}


def decision_row(x: Any) -> dict[str, Any]:
    """What the device page shows of one stored decision, each value as its type or None
    (a record stored before the strict schema may hold anything)."""
    x = obj(x)
    item = x.get("item")
    return {"ts": number(x.get("ts")), "label": text(x.get("label"), 128),
            "item": item if isinstance(item, (int, str)) and not isinstance(item, bool)
            else None,
            "score": number(x.get("score")), "decision": text(x.get("decision"), 64),
            "error": text(x.get("error")), "deadline_missed": x.get("deadline_missed") is True,
            "latency_ms": number(obj(x.get("latency_ms")).get("total")),
            "model_version": text(x.get("model_version"), 128)}


def update_row(u: dict[str, Any]) -> dict[str, Any]:
    """What the device page shows of one update report."""
    return {"received": number(u.get("received")), "version": text(u.get("version"), 128),
            "outcome": text(u.get("outcome"), 64), "reason": text(u.get("reason"))}


def needs_review(s: dict[str, Any]) -> bool:
    """Rejected, sent for review, failed, or classified with low confidence."""
    return (s.get("decision") in ("reject", "review", "error") or s.get("decision") is None
            or s.get("score") is None or s["score"] < LOW_CONFIDENCE)


def review(store: Store, show: str = "todo", limit: int = 500) -> dict[str, Any]:
    """The review queue: the newest kept samples that need a person's eye, unlabelled ones
    (``show="todo"``), labelled ones (``"done"``) or both (``"all"``)."""
    rows = [s for s in store.sample_rows(limit=limit) if needs_review(s)]
    if show == "todo":
        rows = [s for s in rows if s["review"] is None]
    elif show == "done":
        rows = [s for s in rows if s["review"] is not None]
    labels, rejects = class_labels(store)
    return {"samples": rows, "show": show, "labelled": store.review_label_count(),
            "labels": labels, "reject_labels": rejects}


def class_labels(store: Store) -> tuple[list[str], list[str]]:
    """The classes a person can choose, and which of them are defects: the newest
    bundle's (the set the models are trained on), else the built-in synthetic set's."""
    for b in store.bundle_manifests():
        labels, rejects = obj(b["manifest"]).get("labels"), obj(b["manifest"]).get("reject_labels")
        if isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels):
            return labels, [x for x in rejects or [] if x in labels] \
                if isinstance(rejects, list) else labels[1:]
    from edge_common.synthetic import LABELS, REJECT_LABELS

    return list(LABELS), list(REJECT_LABELS)


def models(store: Store, stale_after_s: float, now: float | None = None) -> list[dict[str, Any]]:
    """The models page: each bundle with accuracy, size, sparsity, and who runs it."""
    rows = fleet_rows(store, stale_after_s, now, received=False)
    running: dict[str, list[str]] = {}
    wanted: dict[str, list[str]] = {}
    for r in rows:
        if r["model_version"]:
            running.setdefault(str(r["model_version"]), []).append(r["device"])
    for d in store.desired():
        wanted.setdefault(d["version"], []).append(f"{d['kind']} {d['target']}")
    out = []
    for b in store.bundle_manifests():
        m = obj(b["manifest"])
        metrics, base = obj(m.get("metrics")), obj(m.get("baseline"))
        config = obj(obj(m.get("provenance")).get("config"))
        listed = m.get("artifacts")
        arts = [{"path": text(a.get("path")), "bytes": count(a.get("bytes")),
                 "accuracy": number(obj(a.get("metrics")).get("accuracy")),
                 "p95_ms": number(obj(obj(a.get("metrics")).get("latency_ms")).get("p95"))}
                for a in (listed if isinstance(listed, list) else [])
                if isinstance(a, dict)]
        out.append({"version": b["version"], "name": b["name"], "created": b["created"],
                    "bytes": b["bytes"], "sha256": b["sha256"],
                    "accuracy": number(metrics.get("accuracy")),
                    "baseline_accuracy": number(base.get("accuracy")),
                    "sparsity": number(metrics.get("sparsity")),
                    "prune": text(config.get("prune"), 64),
                    "deployable": m.get("deployable") if isinstance(m.get("deployable"), bool)
                    else None, "artifacts": arts,
                    "running": sorted(running.get(b["version"], [])),
                    "desired_by": wanted.get(b["version"], [])})
    return out
