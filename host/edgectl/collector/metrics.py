"""``GET /metrics``: the fleet and the collector itself in the Prometheus text format
(``prometheus-client``).

Per device (``FleetCollector``, read from the store at each scrape, so every worker
answers the same): up, last seen, model info, decisions by kind and deadline misses (the
board journal's lifetime counters), journal backlog, faults, temperature, and the
trigger → decision latency histogram the board reports in its heartbeat. Nothing here
scans the decisions table: a scrape costs one read of the devices table.

The collector's own requests (count and latency by route template, ``RequestMetrics``)
are ordinary prometheus-client metrics; with several workers ``run_collector`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder and the scrape merges every worker's file
(``MultiProcessCollector``).

Readers: the admin token, or the read-only metrics token (``DATA_DIR/metrics.token``)
for a Prometheus scrape job (``authorization: {credentials_file: …}``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from edgectl.collector.api import API
from edgectl.collector.auth import bearer_token, tokens_match
from edgectl.collector.store import Store
from edgectl.collector.values import number

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
KINDS = ("ok", "reject", "review")

REQUESTS = Counter("edgectl_collector_requests", "HTTP requests answered by the collector",
                   ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "edgectl_collector_request_duration_seconds", "Time to answer a request (server side)",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))

router = APIRouter()


class FleetCollector(Collector):
    """Per-device series from what each board last reported."""

    def __init__(self, store: Store, stale_after_s: float) -> None:
        self.store, self.stale_after_s = store, stale_after_s

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        up = GaugeMetricFamily("edgectl_device_up", "1 if the device was heard from within "
                               "--stale-after seconds", labels=["device", "group"])
        seen = GaugeMetricFamily("edgectl_device_last_seen_timestamp_seconds",
                                 "When the device was last heard from (Unix time)",
                                 labels=["device"])
        info = GaugeMetricFamily("edgectl_device_model_info", "The model version the device "
                                 "runs (value 1)", labels=["device", "model_version"])
        decisions = CounterMetricFamily("edgectl_device_decisions", "Decisions journaled on "
                                        "the board, by kind (lifetime)",
                                        labels=["device", "decision"])
        rejects = CounterMetricFamily("edgectl_device_rejects", "Items rejected (lifetime)",
                                      labels=["device"])
        misses = CounterMetricFamily("edgectl_device_deadline_misses", "Decisions that missed "
                                     "the reject deadline (lifetime)", labels=["device"])
        backlog = GaugeMetricFamily("edgectl_device_journal_backlog", "Decisions journaled "
                                    "but not yet synced", labels=["device"])
        faults = GaugeMetricFamily("edgectl_device_fault", "Active faults (value 1)",
                                   labels=["device", "fault"])
        temp = GaugeMetricFamily("edgectl_device_temperature_celsius", "SoC temperature",
                                 labels=["device"])
        latency = HistogramMetricFamily(
            "edgectl_device_latency_seconds", "Trigger → decision latency on the board "
            "(since the agent started)", labels=["device"])
        for d in self.store.devices():
            name, hb = d["name"], d.get("heartbeat") or {}
            last = d.get("last_seen")
            up.add_metric([name, d.get("group") or ""],
                          float(last is not None and now - last <= self.stale_after_s))
            if last is not None:
                seen.add_metric([name], float(last))
            if hb.get("model_version"):
                info.add_metric([name, str(hb["model_version"])], 1.0)
            counts: dict[str, Any] = hb["counts"] if isinstance(hb.get("counts"), dict) else {}
            for kind in KINDS:
                if number(counts.get(kind)) is not None:
                    decisions.add_metric([name, kind], float(counts[kind]))
            if number(counts.get("reject")) is not None:
                rejects.add_metric([name], float(counts["reject"]))
            miss = number(counts.get("deadline_misses"))
            miss = number(hb.get("deadline_misses")) if miss is None else miss
            if miss is not None:
                misses.add_metric([name], miss)
            if number(counts.get("unsent")) is not None:
                backlog.add_metric([name], float(counts["unsent"]))
            for fault, on in (hb.get("faults") or {}).items() if isinstance(
                    hb.get("faults"), dict) else ():
                if on:
                    faults.add_metric([name, str(fault)], 1.0)
            if number(hb.get("temperature_c")) is not None:
                temp.add_metric([name], float(hb["temperature_c"]))
            buckets = _histogram(hb.get("latency_hist_ms"))
            if buckets is not None:
                latency.add_metric([name], buckets[0], sum_value=buckets[1])
        yield from (up, seen, info, decisions, rejects, misses, backlog, faults, temp, latency)


def _histogram(h: Any) -> tuple[list[tuple[str, float]], float] | None:
    """A heartbeat's ``latency_hist_ms`` as Prometheus buckets in seconds, or None when it
    is missing or inconsistent (a board's bad report must not break the scrape)."""
    if not isinstance(h, dict):
        return None
    le, counts = h.get("le"), h.get("counts")
    n, total = number(h.get("count")), number(h.get("sum"))
    if not (isinstance(le, list) and isinstance(counts, list) and len(le) == len(counts)):
        return None
    if n is None or total is None:
        return None
    bounds = [b for b in map(number, le) if b is not None]
    values = [c for c in map(number, counts) if c is not None]
    if len(bounds) != len(le) or len(values) != len(counts):
        return None  # a bound or a count that is not a number
    pairs = sorted(zip(bounds, values, strict=True))
    if any(b[1] > a[1] for a, b in zip(pairs[1:], pairs, strict=False)) or \
            (pairs and pairs[-1][1] > n):
        return None  # not cumulative
    out = [(f"{b / 1000.0:g}", c) for b, c in pairs] + [("+Inf", n)]
    return out, total / 1000.0


def registry_for(store: Store, stale_after_s: float) -> CollectorRegistry:
    """What a scrape reads: the fleet, and this process's (or every worker's) requests."""
    reg = CollectorRegistry()
    reg.register(FleetCollector(store, stale_after_s))
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(reg)
    else:
        reg.register(REQUESTS)
        reg.register(REQUEST_SECONDS)
    return reg


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    settings = request.app.state.settings
    token = bearer_token(request.headers.get("authorization"))
    if token is None or not (tokens_match(token, settings.admin_token_hash) or (
            settings.metrics_token_hash and tokens_match(token, settings.metrics_token_hash))):
        raise HTTPException(401, "the metrics token or the admin token is required",
                            headers={"WWW-Authenticate": "Bearer"})
    reg = request.app.state.metrics_registry
    return Response(generate_latest(reg), media_type=CONTENT_TYPE_LATEST)


# Label values of the collector's own request series, each from a fixed set (issue 31:
# the raw method as a label let anyone grow /metrics without bound):
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")
STATUSES = (200, 201, 204, 206, 303, 304, 307, 400, 401, 403, 404, 405, 409, 410, 413, 415,
            416, 422, 500)
OTHER = "other"  # a method or status outside the sets, a path no route matches
STATIC = "/static"  # every file under /static/ (the pages' scripts and styles)


def max_request_series(templates: set[str]) -> int:
    """The most series ``RequestMetrics`` can make over these route templates, whatever
    requests arrive:
    a counter per (method, route, status), two series each (``_total``, ``_created``),
    and a histogram per (method, route), of its buckets (with +Inf) and ``_count``,
    ``_sum``, ``_created``."""
    routes = len(templates | {STATIC}) + 1  # + other
    methods, statuses = len(METHODS) + 1, len(STATUSES) + 1
    buckets = len(REQUEST_SECONDS._upper_bounds)  # includes +Inf
    return methods * routes * statuses * 2 + methods * routes * (buckets + 3)


class RequestMetrics:
    """ASGI middleware: count and time every HTTP request by its route template (not the
    raw path: one series per route, however many devices), and tell the client the
    server time (``Server-Timing: app;dur=MS``). Every label comes from a fixed set:
    a method outside ``METHODS``, a status outside ``STATUSES`` and a path no route
    template matches all count as ``other`` (``max_request_series`` is the bound)."""

    def __init__(self, app: Any, templates: set[str]) -> None:
        self.app, self.templates = app, templates

    def _label(self, scope: dict[str, Any]) -> str:
        route = scope.get("route")
        path = getattr(route, "path", None)
        raw = scope.get("path", "")
        if isinstance(path, str) and raw.startswith(API + "/") and not path.startswith(API):
            path = API + path  # an included router's route knows only its own path
        if isinstance(path, str) and path in self.templates:
            return path
        return STATIC if raw.startswith(STATIC + "/") else OTHER

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def _send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                ms = (time.perf_counter() - t0) * 1000.0
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"server-timing", f"app;dur={ms:.2f}".encode())]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            path = self._label(scope)
            method = scope.get("method", "")
            method = method if method in METHODS else OTHER
            code = str(status) if status in STATUSES else OTHER
            REQUESTS.labels(method, path, code).inc()
            REQUEST_SECONDS.labels(method, path).observe(time.perf_counter() - t0)
