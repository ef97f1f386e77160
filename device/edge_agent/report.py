"""What the agent tells about itself, and when: the status/heartbeat body, the periodic log
line, the end-of-run summary (``Agent.snapshot``, ``status_line``, ``summary`` call these),
and the reporter thread that rewrites ``status.json``, logs the line and enforces the
journal's disk caps on their intervals (``journal.status_every_s``, ``log_every_s``,
``prune_every_s``)."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from edge_agent import machine
from edge_agent.journal_schema import DATA_MODE
from edge_common.fileio import write_json_atomic

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"


def status_path(cfg: Any) -> Path:
    return Path(cfg.journal.dir) / STATUS_FILE


def snapshot(agent: Any) -> dict[str, Any]:
    """The heartbeat body (and the status file's content)."""
    cam = agent.camera
    counts = agent.run_counts()
    with agent._lock:
        accuracy = agent.truth_correct / agent.truth_seen if agent.truth_seen else None
    try:
        jcounts = agent.journal.counts()
        disk = agent.journal.disk_bytes()
    except Exception:  # noqa: BLE001 - a status must not fail because the disk does
        jcounts, disk = {}, None
    return {
        "device_id": agent.config.device_id,
        "model_version": agent.classifier.version if agent.classifier else None,
        "state": agent.state,
        "pid": os.getpid(),
        "updated": time.time(),
        "uptime_s": round(time.monotonic() - agent.started, 1),
        "items": agent.stats.items,
        "fps": round(agent.stats.fps(), 2),
        "latency_ms": agent.stats.latency_ms(),
        "latency_hist_ms": agent.stats.latency_hist_ms("total"),
        "deadline_misses": agent.stats.deadline_misses,
        "counts": {**jcounts, "run": counts},
        "accuracy": None if accuracy is None else round(accuracy, 4),
        "last_id": agent.last_id,
        "disk_bytes": disk,
        "faults": dict(agent.faults),
        "latency_budget": None if agent.budget.budget_ms is None else {
            "budget_ms": agent.budget.budget_ms, "inference_p95_ms": agent.budget.p95_ms,
            "over": agent.budget.over},
        "unjournaled": len(agent.writer.backlog),
        "unjournaled_dropped": agent.writer.backlog_dropped,
        "plc": agent.station.snapshot() if agent.station else None,
        "temperature_c": machine.temperature_c(),
        "camera": {
            "type": getattr(cam, "name", None),
            "degraded": bool(getattr(cam, "degraded", False)),
            "last_error": getattr(cam, "last_error", None),
        },
    }


def status_line(agent: Any) -> str:
    lat = agent.stats.latency_ms().get("total", {})
    counts = agent.run_counts()
    degraded = " camera DEGRADED" if getattr(agent.camera, "degraded", False) else ""
    model = agent.classifier.version if agent.classifier else None
    return (
        f"model {model}: {agent.stats.items} items, {agent.stats.fps():.1f} fps, "
        f"{counts['reject']} rejects, {counts['review']} reviews, "
        f"{agent.stats.deadline_misses} misses, trigger→decision p50 "
        f"{lat.get('p50', 0):.1f} p99 {lat.get('p99', 0):.1f} ms{degraded}"
    )


def summary(agent: Any) -> dict[str, Any]:
    """The end-of-run summary (``edge-agent run`` prints it)."""
    elapsed = time.monotonic() - agent.started
    counts = agent.run_counts()
    with agent._lock:
        accuracy = agent.truth_correct / agent.truth_seen if agent.truth_seen else None
    lat = agent.stats.latency_ms()
    return {
        "items": agent.stats.items,
        "ok": counts["ok"],
        "rejects": counts["reject"],
        "reviews": counts["review"],
        "errors": counts["errors"],
        "passed": counts["passed"],
        "failed": counts["failed"],
        "late": counts["late"],
        "pulses": agent.actuator.pulses if agent.actuator else 0,
        "deadline_misses": agent.stats.deadline_misses,
        "fps": round(agent.stats.items / elapsed, 2) if elapsed > 0 else 0.0,
        "accuracy": None if accuracy is None else round(accuracy, 4),
        "latency_ms": {k: {q: v[q] for q in ("p50", "p95", "p99")} for k, v in lat.items()},
        "duration_s": round(elapsed, 2),
        "model_version": agent.classifier.version if agent.classifier else None,
        "journal": str(agent.journal.path),
    }


def run_reporter(agent: Any, stop: threading.Event) -> None:
    """The reporter thread's loop, until ``stop`` is set."""
    jc = agent.config.journal
    now = time.monotonic()
    next_status, next_log, next_prune = now, now + jc.log_every_s, now + jc.prune_every_s
    while not stop.wait(0.2):
        now = time.monotonic()
        if now >= next_status:
            next_status = now + jc.status_every_s
            write_status(agent)
        if now >= next_log:
            next_log = now + jc.log_every_s
            log.info("%s", status_line(agent))
        if now >= next_prune:
            next_prune = now + jc.prune_every_s
            prune(agent)


def prune(agent: Any) -> None:
    """Enforce the journal caps (policy in Journal.prune; losses are counted there)."""
    jc = agent.config.journal
    try:
        removed = agent.journal.prune(jc.max_bytes, jc.max_rows)
        if removed["rows"] or removed["samples"]:
            log.info("journal pruned: %s", removed)
    except Exception as err:  # noqa: BLE001
        log.warning("journal prune failed: %s", err)


def write_status(agent: Any) -> None:
    try:
        write_json_atomic(status_path(agent.config), snapshot(agent), mode=DATA_MODE)
        agent.notifier.status(status_line(agent))
    except Exception as err:  # noqa: BLE001 - e.g. the disk is full (a fault already)
        log.warning("cannot write the status file: %s", err)
