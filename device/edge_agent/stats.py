"""Per-stage latency histograms (bounded memory), fps and deadline misses.

A histogram has log-spaced buckets 0.5 % wide from 1 µs to ~100 s, so percentiles are
within 0.25 % of the exact value however long the agent runs, in fixed memory.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any

import numpy as np

STAGES = ("capture", "preprocess", "inference", "decision", "total", "actuation")
_MIN_MS = 1e-3
_GROWTH = 1.005
_NBUCKETS = int(math.log(1e5 / _MIN_MS) / math.log(_GROWTH)) + 2
# The coarse buckets (ms) the histograms are exported in: the agent's /metrics and the
# heartbeat's ``latency_hist_ms`` (the collector's /metrics), Prometheus-style ``le``.
EXPORT_BUCKETS_MS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0,
                     300.0, 500.0, 750.0, 1000.0, 2000.0, 5000.0)


class Histogram:
    """Log-bucketed latency histogram in milliseconds; thread-safe."""

    def __init__(self) -> None:
        self._counts = np.zeros(_NBUCKETS, dtype=np.int64)
        self._n = 0
        self._sum = 0.0
        self._max = 0.0
        self._min = math.inf
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        if not math.isfinite(ms):
            return
        i = 0 if ms <= _MIN_MS else int(math.log(ms / _MIN_MS) / math.log(_GROWTH)) + 1
        with self._lock:
            self._counts[min(i, _NBUCKETS - 1)] += 1
            self._n += 1
            self._sum += ms
            self._max = max(self._max, ms)
            self._min = min(self._min, ms)

    @property
    def count(self) -> int:
        return self._n

    def cumulative(self, bounds_ms: tuple[float, ...] = EXPORT_BUCKETS_MS) -> dict[str, Any]:
        """``{"le": bounds, "counts": items <= each bound, "count": n, "sum": ms}``: the
        histogram in Prometheus' cumulative form. A fine bucket counts under a bound when
        its upper edge is within it (so a count is exact to the fine buckets' 0.5 %)."""
        with self._lock:
            counts, n, total = self._counts.copy(), self._n, self._sum
        cum = np.cumsum(counts)
        out = []
        for b in bounds_ms:
            # fine bucket i holds (_MIN_MS * g^(i-1), _MIN_MS * g^i]; bucket 0 is <= _MIN_MS
            i = 0 if b <= _MIN_MS else int(math.floor(math.log(b / _MIN_MS) / math.log(_GROWTH)
                                                       + 1e-9))
            out.append(int(cum[min(i, _NBUCKETS - 1)]))
        return {"le": list(bounds_ms), "counts": out, "count": n, "sum": round(total, 4)}

    def percentiles(self, qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
        """``{"p50": ms, ...}`` (bucket midpoints, within the range seen); zeros if empty."""
        with self._lock:
            n, counts, mx, mn = self._n, self._counts.copy(), self._max, self._min
        if n == 0:
            return {f"p{q:g}": 0.0 for q in qs}
        cum = np.cumsum(counts)
        out = {}
        for q in qs:
            i = int(np.searchsorted(cum, math.ceil(q / 100 * n)))
            mid = _MIN_MS * _GROWTH ** (i - 0.5) if i > 0 else _MIN_MS
            out[f"p{q:g}"] = round(max(mn, min(mid, mx)), 4)
        return out


class Stats:
    """Everything the agent measures: stage histograms, items, fps, deadline misses."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.hist = {s: Histogram() for s in STAGES}
        self.items = 0
        self.deadline_misses = 0
        self.started = time.monotonic()
        self._recent: deque[float] = deque()
        self._window = window_s
        self._lock = threading.Lock()

    def add_item(self, latency_ms: dict[str, float]) -> None:
        for stage, ms in latency_ms.items():
            if stage in self.hist and ms is not None:
                self.hist[stage].add(float(ms))
        now = time.monotonic()
        with self._lock:
            self.items += 1
            self._recent.append(now)
            while self._recent and now - self._recent[0] > self._window:
                self._recent.popleft()

    def add_miss(self) -> None:
        with self._lock:
            self.deadline_misses += 1

    def fps(self) -> float:
        """Items per second over the last ``window_s`` (or since start, if shorter)."""
        now = time.monotonic()
        with self._lock:
            while self._recent and now - self._recent[0] > self._window:
                self._recent.popleft()
            n = len(self._recent)
        span = min(self._window, now - self.started)
        return n / span if span > 0 else 0.0

    def latency_hist_ms(self, stage: str = "total") -> dict[str, Any]:
        return self.hist[stage].cumulative()

    def latency_ms(self) -> dict[str, dict[str, float]]:
        return {s: h.percentiles() for s, h in self.hist.items() if h.count}

    def summary(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "fps": round(self.fps(), 2),
            "deadline_misses": self.deadline_misses,
            "latency_ms": self.latency_ms(),
        }
