"""``edge-agent bench``: how fast every artifact of a bundle runs on this machine.

For each artifact × thread count: load time, batch-1 latency p50/p95/p99 after warm-up
(``edge_common.timing.measure_latency``), sequential throughput, peak RSS, and agreement
with the bundle's test vectors: top-1 agreement with, and max abs diff from, the outputs
recorded at build (the vectors carry no labels, so there is no accuracy to compute here;
the table's accuracy is the test-set figure the manifest records per artifact). Then the
table's fields (``edge_common.benchtable``): size, sparsity, speed relative to FP32 ONNX.
Each measurement runs in a fresh process (``spawn``) so load time and peak RSS belong to
that artifact alone, not to whatever ran before it. Output format: docs/architecture.md,
"edge-agent bench output" (``edgectl bench`` parses it).
"""

from __future__ import annotations

import multiprocessing
import resource
import socket
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent import machine
from edge_common import benchtable
from edge_common.bundle import compare_outputs, load_bundle
from edge_common.errors import EdgeError
from edge_common.runtime import open_session
from edge_common.timing import measure_latency


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def measure_artifact(
    model_path: str,
    fmt: str,
    threads: int,
    x: np.ndarray,
    expected: np.ndarray | None,
    runs: int,
    warmup: int,
) -> dict[str, Any]:
    """One measurement (runs in the child process)."""
    t0 = time.perf_counter()
    session = open_session(model_path, fmt, threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    one = np.ascontiguousarray(x[:1])
    lat = measure_latency(lambda: session.run(one), warmup=warmup, runs=runs)
    n = max(runs, 1)
    t1 = time.perf_counter()
    for i in range(n):
        session.run(np.ascontiguousarray(x[i % len(x)][None]))
    throughput = n / (time.perf_counter() - t1)
    got = np.concatenate([session.run(np.ascontiguousarray(xi[None])) for xi in x])
    same = (compare_outputs(got, expected)
            if expected is not None and np.shape(expected) == got.shape else None)
    return {
        "load_ms": round(load_ms, 2),
        "latency_ms": {k: round(lat[k], 4) for k in ("p50", "p95", "p99")},
        "throughput_fps": round(throughput, 1),
        "peak_rss_mb": _peak_rss_mb(),
        "agreement": None if same is None else round(same["top1_agreement"], 4),
        "max_abs_diff": None if same is None else float(f"{same['max_abs_diff']:.4g}"),
        "vectors": int(len(x)),
    }


def _measure_or_skip(*args: Any) -> dict[str, Any]:
    """measure_artifact in the worker; an EdgeError comes back as a note, not raised.

    Some of them (MissingExtraError: several base classes, extra __init__ arguments)
    cannot be pickled back from a worker process, which breaks the pool; so the child
    turns them into the row's ``error`` text and the artifact is skipped.
    """
    try:
        return measure_artifact(*args)
    except EdgeError as err:  # e.g. no TFLite runtime on this board
        return {"error": f"skipped: {err}"}


def run_bench(
    bundle_path: str,
    threads: list[int] | None = None,
    runs: int = 50,
    warmup: int = 10,
    public_key: str | None = None,
    isolate: bool = True,
) -> dict[str, Any]:
    """Benchmark every artifact of the bundle at every thread count; the bench JSON."""
    threads = threads or [1]
    bundle = load_bundle(bundle_path, public_key=public_key)
    try:
        x, expected = bundle.test_vectors()
        results = []
        for art in bundle.artifacts:
            for n in threads:
                row: dict[str, Any] = {
                    "artifact": art.path,
                    "format": art.format,
                    "precision": art.precision,
                    "threads": n,
                }
                args = (
                    str(bundle.artifact_path(art)),
                    art.format,
                    n,
                    x,
                    expected.get(art.path),
                    runs,
                    warmup,
                )
                try:
                    if isolate:
                        ctx = multiprocessing.get_context("spawn")
                        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                            row.update(pool.submit(_measure_or_skip, *args).result())
                    else:
                        row.update(measure_artifact(*args))
                except EdgeError as err:  # e.g. no TFLite runtime here: report, go on
                    row["error"] = f"skipped: {err}"
                results.append(row)
        return {
            "device": socket.gethostname(),
            "machine": machine.describe(),
            "bundle": {"name": bundle.name, "version": bundle.version},
            "pruning": benchtable.pruning_of(bundle.manifest),
            "results": benchtable.annotate(results, bundle.manifest),
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    finally:
        bundle.close()


def format_table(report: dict[str, Any]) -> str:
    """The bench table (``edge_common.benchtable``: the same one ``edgectl bench`` prints)."""
    return benchtable.format_table(report)
