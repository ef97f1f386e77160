"""Does pruning make the model faster? Dense and pruned timed in one run (ONNX Runtime FP32
and PyTorch eager), and the plain sentence a build or `edgectl prune` prints about it:
unstructured zeros bring no speed on dense kernels, removed channels do."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

NO_SPEED_RATIO = 0.9  # pruned/dense latency at or above this: no speed worth the name


def speed_note(method: str, ratio_ort: float | None) -> str:
    """Say plainly what the measured latency (pruned / dense, ONNX Runtime FP32) means for
    this kind of pruning; unstructured sparsity that brings no speed names the alternative."""
    ratio = None if ratio_ort is None or math.isnan(ratio_ort) else ratio_ort  # None: unmeasured
    if method == "unstructured":
        if ratio is not None and ratio < NO_SPEED_RATIO:
            return (f"the unstructured model runs at {ratio:.2f}x the dense latency in "
                    "ONNX Runtime FP32")
        at = f" (measured: {ratio:.2f}x the dense latency in ONNX Runtime FP32)" \
            if ratio is not None else ""
        return (
            f"unstructured sparsity brings no speed here{at}: zeros do not make dense kernels "
            "faster, ONNX Runtime and PyTorch still multiply every weight; the gain is "
            "compressed size. For speed, remove channels: --prune structured"
        )
    if ratio is None:
        return "channels were removed physically; latency not measured"
    verdict = "faster" if ratio < 0.95 else "not measurably faster"
    return (
        f"channels were removed physically (smaller layers, fewer MACs): the pruned model runs "
        f"at {ratio:.2f}x the dense latency in ONNX Runtime FP32, {verdict}"
    )


def measure_speed(
    dense: nn.Module,
    pruned: nn.Module,
    img_size: int,
    method: str,
    threads: int = 1,
    runs: int = 100,
    min_time_s: float = 0.5,
    rounds: int = 2,
) -> dict[str, Any]:
    """Batch-1 latency of the dense and pruned models, measured in the same run.

    ONNX Runtime FP32 (a temporary export opened with ``edge_common.runtime``) and PyTorch
    eager, ``threads`` threads. Dense and pruned are measured alternately ``rounds`` times
    and the fastest median kept, so a noisy neighbour hits both alike. Also gives the
    gzip size of each ONNX file (where unstructured zeros pay off).
    """
    import tempfile
    from pathlib import Path

    from edge_common.runtime import open_session
    from edge_common.timing import best_of_rounds
    from edgectl.pipeline.export import export_onnx
    from edgectl.pipeline.metrics import compressed_size, file_size

    x = torch.randn(1, 3, img_size, img_size)
    xn = x.numpy()
    models = {"dense": dense.eval(), "pruned": pruned.eval()}
    out: dict[str, Any] = {"threads": threads, "batch": 1, "img_size": img_size}
    with tempfile.TemporaryDirectory(prefix="edgectl-speed-") as tmp:
        sessions, sizes = {}, {}
        for name, m in models.items():
            path = export_onnx(m, Path(tmp) / f"{name}.onnx", img_size)
            sessions[name] = open_session(path, threads=threads)
            sizes[name] = {"onnx_bytes": file_size(path), "onnx_gzip_bytes": compressed_size(path)}
        prev_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            fns: dict[str, dict[str, Callable[[], Any]]] = {
                "onnxruntime_fp32": {n: functools.partial(s.run, xn) for n, s in sessions.items()},
                "pytorch_eager": {n: _eager(m, x) for n, m in models.items()},
            }
            for runtime, by_model in fns.items():
                best = best_of_rounds(by_model, rounds=rounds, runs=runs, min_time_s=min_time_s)
                out[runtime] = {
                    "dense_ms": best["dense"],
                    "pruned_ms": best["pruned"],
                    "ratio": best["pruned"] / best["dense"],
                }
        finally:
            torch.set_num_threads(prev_threads)
    out["size"] = sizes
    out["note"] = speed_note(method, out["onnxruntime_fp32"]["ratio"])
    return out


def _eager(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    def run() -> Any:
        with torch.inference_mode():
            return model(x)

    return run
