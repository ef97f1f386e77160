"""Latency measurement shared by host and board: warm-up, many runs, percentiles."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def percentiles(samples_ms: list[float] | np.ndarray) -> dict[str, float]:
    """p50/p95/p99/mean/min/max of a list of milliseconds (empty → zeros)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "mean": 0.0, "min": 0.0, "max": 0.0, "n": 0}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "p50": float(p50), "p95": float(p95), "p99": float(p99),
        "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max()), "n": int(a.size),
    }


def measure_latency(
    fn: Callable[[], Any],
    warmup: int = 10,
    runs: int = 50,
    min_time_s: float = 0.0,
) -> dict[str, float]:
    """Call ``fn`` ``warmup`` times untimed, then at least ``runs`` times timed.

    Keeps running until ``min_time_s`` has passed too, so very fast models still get a
    stable median. Returns milliseconds per call as :func:`percentiles`.
    """
    for _ in range(max(0, warmup)):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < runs or (time.perf_counter() - start) < min_time_s:
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        if len(samples) >= 100 * max(runs, 1):
            break
    return percentiles(samples)
