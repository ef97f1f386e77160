"""Latency measurement shared by host and board: warm-up, many runs, percentiles."""

from __future__ import annotations

import math
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


def artifact_latency(
    path: Any,
    fmt: str | None,
    x: np.ndarray,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    min_time_s: float = 0.0,
) -> dict[str, Any]:
    """Latency of one model file in its own runtime (``edge_common.runtime``, the board's
    code) on the batch ``x``: :func:`measure_latency` plus ``threads`` and ``batch``."""
    from edge_common.runtime import open_session

    session = open_session(path, fmt, threads=threads)
    lat = measure_latency(lambda: session.run(x), warmup=warmup, runs=runs,
                          min_time_s=min_time_s)
    return {**lat, "threads": threads, "batch": int(len(x))}


def best_of_rounds(
    fns: dict[str, Callable[[], Any]],
    rounds: int = 2,
    warmup: int = 10,
    runs: int = 50,
    min_time_s: float = 0.0,
) -> dict[str, float]:
    """The lowest median (ms) of each function over ``rounds`` rounds, the functions taking
    turns within a round: a noisy neighbour hits every one alike, so ratios between them
    (pruned vs dense, INT8 vs FP32) compare like with like."""
    best = {name: math.inf for name in fns}
    for _ in range(max(1, rounds)):
        for name, fn in fns.items():
            p50 = measure_latency(fn, warmup=warmup, runs=runs, min_time_s=min_time_s)["p50"]
            best[name] = min(best[name], p50)
    return best
