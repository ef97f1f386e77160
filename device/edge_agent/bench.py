"""``edge-agent bench``: how fast every artifact of a bundle runs on this machine.

For each artifact × thread count: load time, batch-1 latency p50/p95/p99 after warm-up,
sequential throughput, peak RSS, and how the artifact agrees with the outputs the host
recorded in the bundle's test vectors: top-1 ``agreement`` and ``max_abs_diff``. That is
not accuracy (the vectors carry no labels): accuracy on the test set is measured at build
and read from the manifest by ``edgectl bench``; ``labels_accuracy`` appears only when a
bundle stores labels ``y`` with its vectors. A ``--reference`` model file (the dense FP32
ONNX, say) is measured the same way, so ``edgectl bench`` can give every artifact's
latency as a ratio to it, on this board. Each measurement runs in a fresh process
(``spawn``) so load time and peak RSS belong to that artifact alone, not to whatever ran
before it. Output format:
docs/architecture.md, "edge-agent bench output" (``edgectl bench`` parses it).
"""

from __future__ import annotations

import functools
import json
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
from edge_common.bundle import Bundle, compare_outputs, load_bundle
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


def _vectors(bundle: Bundle) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
    x, expected = bundle.test_vectors()
    arrays = bundle.test_vector_arrays()
    y = np.asarray(arrays["y"]).astype(np.int64).reshape(-1) if "y" in arrays else None
    return x, expected, y


def measure_artifact(
    model_path: str,
    fmt: str,
    threads: int,
    x: np.ndarray,
    expected: np.ndarray | None,
    y: np.ndarray | None,
    runs: int,
    warmup: int,
) -> dict[str, Any]:
    """One measurement (runs in the child process)."""
    t0 = time.perf_counter()
    session = open_session(model_path, fmt, threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    one = np.ascontiguousarray(x[:1])
    lat = measure_latency(lambda: session.run(one), warmup=warmup, runs=runs)
    throughput = 1e3 / lat["mean"] if lat["mean"] > 0 else 0.0  # sequential, batch 1
    logits = np.concatenate([session.run(np.ascontiguousarray(xi[None])) for xi in x])
    row: dict[str, Any] = {
        "load_ms": round(load_ms, 2),
        "latency_ms": {k: round(lat[k], 4) for k in ("p50", "p95", "p99")},
        "throughput_fps": round(throughput, 1),
        "peak_rss_mb": _peak_rss_mb(),
        "bytes": Path(model_path).stat().st_size,
        "agreement": None,
        "max_abs_diff": None,
        "vectors": int(len(x)),
    }
    if expected is not None and expected.shape == logits.shape:
        same = compare_outputs(logits, expected)
        row["agreement"] = round(same["top1_agreement"], 4)
        row["max_abs_diff"] = same["max_abs_diff"]
    if y is not None and len(y) == len(x):
        row["labels_accuracy"] = round(float(np.mean(logits.argmax(-1) == y)), 4)
    return row


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
    except Exception as err:  # noqa: BLE001 - a runtime refusing the model: report the row
        return {"error": f"failed: {type(err).__name__}: {str(err)[:200]}"}


def run_bench(
    bundle_path: str,
    threads: list[int] | None = None,
    runs: int = 50,
    warmup: int = 10,
    public_key: str | None = None,
    isolate: bool = True,
    reference: str | None = None,
) -> dict[str, Any]:
    """Benchmark every artifact of the bundle (and ``reference``, a model file measured the
    same way, marked ``"reference": true``) at every thread count; the bench JSON."""
    threads = threads or [1]
    bundle = load_bundle(bundle_path, public_key=public_key)
    try:
        x, expected, y = _vectors(bundle)
        jobs: list[tuple[dict[str, Any], str, str, np.ndarray | None]] = [
            ({"artifact": art.path, "format": art.format, "precision": art.precision},
             str(bundle.artifact_path(art)), art.format, expected.get(art.path))
            for art in bundle.artifacts
        ]
        if reference:
            ref = Path(reference)
            fmt = "tflite" if ref.suffix == ".tflite" else "onnx"
            jobs.append(({"artifact": ref.name, "format": fmt, "precision": "fp32",
                          "reference": True}, str(ref), fmt, None))
        results = []
        for head, path, fmt, want in jobs:
            for n in threads:
                row: dict[str, Any] = {**head, "threads": n}
                args = (path, fmt, n, x, want, y, runs, warmup)
                try:
                    if isolate:
                        ctx = multiprocessing.get_context("spawn")
                        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                            row.update(pool.submit(_measure_or_skip, *args).result())
                    else:
                        row.update(_measure_or_skip(*args))
                except EdgeError as err:  # e.g. no TFLite runtime here: report, go on
                    row["error"] = f"skipped: {err}"
                results.append(row)
        return {
            "device": socket.gethostname(),
            "machine": machine.describe(),
            "bundle": {"name": bundle.name, "version": bundle.version},
            "results": results,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    finally:
        bundle.close()


PROFILE_LIST = "profile.json"


def run_profile(models_dir: str, threads: list[int] | None = None, runs: int = 50,
                warmup: int = 10) -> dict[str, Any]:
    """Batch-1 latency of every model listed in ``models_dir/profile.json``
    (``{"models": [{"file": NAME, "shape": [1, C, H, W]}]}``: the host's per-block latency
    table, ``edgectl bench --profile-layers``) on random input of its shape, at every
    thread count, in this process (hundreds of small models: a process each would cost
    more than the measurements). A file listed but missing, or a model a runtime refuses,
    is that row's ``error``; the others are measured."""
    threads = threads or [1]
    root = Path(models_dir)
    try:
        listing = json.loads((root / PROFILE_LIST).read_text())
        models = [(str(m["file"]), [int(d) for d in m["shape"]]) for m in listing["models"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise EdgeError(f"bench --profile: {root / PROFILE_LIST} unreadable: {err}") from err
    rng = np.random.default_rng(0)
    results = []
    for name, shape in models:
        path = root / name
        fmt = "tflite" if path.suffix == ".tflite" else "onnx"
        x = rng.standard_normal(shape).astype(np.float32)
        for n in threads:
            row: dict[str, Any] = {"file": name, "format": fmt, "threads": n, "shape": shape}
            try:
                if Path(name).name != name or not path.is_file():
                    raise EdgeError(f"no such model in the profile folder: {name}")
                session = open_session(path, fmt, n)
                lat = measure_latency(functools.partial(session.run, x), warmup=warmup, runs=runs)
                row["latency_ms"] = {k: round(lat[k], 5) for k in ("p50", "p95", "p99")}
                row["n"] = lat["n"]
            except Exception as err:  # noqa: BLE001 - one bad model is its row, not the run
                row["error"] = f"{type(err).__name__}: {str(err)[:200]}"
            results.append(row)
    return {"device": socket.gethostname(), "machine": machine.describe(),
            "profile": str(root), "results": results,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def format_table(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"{report['device']}: {m['cpu']} ({m['cores']} cores, {m['arch']}), governor "
        f"{m['governor']}, {m['temperature_c']} °C, throttled {m['throttled']}",
        f"bundle {report['bundle']['name']}@{report['bundle']['version']}",
        f"{'artifact':<24}{'thr':>4}{'load ms':>9}{'p50':>8}{'p95':>8}{'p99':>8}"
        f"{'fps':>9}{'RSS MB':>8}{'agree':>7}",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"{r['artifact']:<24}{r['threads']:>4}  {r['error']}")
            continue
        lat = r["latency_ms"]
        acc = "-" if r.get("agreement") is None else f"{r['agreement']:.3f}"
        lines.append(
            f"{r['artifact']:<24}{r['threads']:>4}{r['load_ms']:>9.1f}{lat['p50']:>8.2f}"
            f"{lat['p95']:>8.2f}{lat['p99']:>8.2f}{r['throughput_fps']:>9.1f}"
            f"{r['peak_rss_mb']:>8.1f}{acc:>7}"
        )
    lines.append(NOTE)
    return "\n".join(lines)


NOTE = ("agree: top-1 agreement with the outputs recorded at build (test vectors), not "
        "accuracy; accuracy on the test set is in the bundle's manifest")
