"""Evaluate a model: accuracy, per-class accuracy, confusion, size, sparsity, MACs, latency.

Usable without click (``edgectl eval``, pruning and build all call :func:`evaluate`).
Latency is the PyTorch eager model on the host CPU, measured with
:func:`edge_common.timing.measure_latency` (warm-up, then many timed runs; median and
p95) at batch 1 and per image in a batch of 32, with ``torch.set_num_threads(threads)``
for the measurement (restored afterwards). Board latency is ``edgectl bench``'s job.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_common.timing import measure_latency
from edgectl.pipeline import metrics
from edgectl.pipeline.data import Datasets, Samples
from edgectl.pipeline.training import predict

BATCH_LATENCY = 32


def confusion_matrix(pred: Sequence[int], true: Sequence[int], num_classes: int) -> np.ndarray:
    """``m[t, p]`` = how many images of true class ``t`` were predicted as ``p``."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return m


def _first_batch(dataset: Samples, n: int) -> torch.Tensor:
    xs = [dataset[i % len(dataset)][0] for i in range(n)]
    return torch.stack(xs)


def measure_torch_latency(
    model: nn.Module,
    example: torch.Tensor,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 10,
    min_time_s: float = 1.0,
) -> dict[str, Any]:
    """Latency of ``model(example)`` in ms (p50, p95, ...) with ``threads`` CPU threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    model.eval()
    try:
        with torch.inference_mode():
            stats = measure_latency(
                lambda: model(example), warmup=warmup, runs=runs, min_time_s=min_time_s
            )
    finally:
        torch.set_num_threads(before)
    return dict(stats)


def evaluate(
    model: nn.Module,
    test_dataset: Samples | Datasets,
    labels: Sequence[str] | None = None,
    img_size: int | None = None,
    threads: int = 1,
    checkpoint_path: str | Path | None = None,
    latency_runs: int = 50,
    latency: bool = False,
    macs: bool = True,
) -> dict[str, Any]:
    """Measure ``model`` on ``test_dataset``; return the metrics dict.

    Keys: ``accuracy`` (fraction 0–1), ``per_class`` ({label: accuracy}), ``confusion``
    (rows true, columns predicted), ``labels``, ``n``, ``params``, ``nonzero``,
    ``sparsity`` (1 − nonzero/params), ``size_bytes`` (the checkpoint file when given,
    else the serialized state_dict), ``size_gzip_bytes``, ``macs``, and only when
    asked (``latency=True``; accuracy alone does no timing): ``latency_ms`` =
    ``{p50, p95, p99, mean, n, threads, batch: 1,
    batch32: {p50, p95, batch: 32, per_image: true}}``.
    """
    if isinstance(test_dataset, Datasets):
        labels = labels or test_dataset.labels
        img_size = img_size or test_dataset.input_spec.size
        test_dataset = test_dataset.test
    if labels is None or img_size is None:
        raise ValueError("evaluate needs labels and img_size (or a Datasets)")
    model.eval()
    pred, true = predict(model, test_dataset)
    conf = confusion_matrix(pred.tolist(), true.tolist(), len(labels))
    per_class = {
        lb: (float(conf[i, i] / conf[i].sum()) if conf[i].sum() else None)
        for i, lb in enumerate(labels)
    }
    n = int(conf.sum())
    result: dict[str, Any] = {
        "accuracy": float(np.trace(conf) / n) if n else 0.0,
        "per_class": per_class,
        "confusion": conf.tolist(),
        "labels": list(labels),
        "n": n,
        "params": metrics.count_params(model),
        "nonzero": metrics.count_nonzero(model),
        "sparsity": metrics.sparsity(model),
    }
    if checkpoint_path is not None:
        result["size_bytes"] = metrics.file_size(checkpoint_path)
        result["size_gzip_bytes"] = metrics.compressed_size(checkpoint_path)
    else:
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        result["size_bytes"] = buf.tell()
    if macs:
        result["macs"] = metrics.count_macs(model, img_size)
    if latency and len(test_dataset):
        x1 = _first_batch(test_dataset, 1)
        lat = measure_torch_latency(model, x1, threads, runs=latency_runs)
        xb = _first_batch(test_dataset, BATCH_LATENCY)
        batch = measure_torch_latency(model, xb, threads, runs=max(5, latency_runs // 5), warmup=3)
        result["latency_ms"] = {
            **lat,
            "threads": threads,
            "batch": 1,
            "batch32": {
                "p50": batch["p50"] / BATCH_LATENCY,
                "p95": batch["p95"] / BATCH_LATENCY,
                "batch": BATCH_LATENCY,
                "per_image": True,
                "n": batch["n"],
            },
        }
    return result


def format_report(result: dict[str, Any], title: str = "") -> str:
    """A human-readable table of an :func:`evaluate` result."""
    lines = [title] if title else []
    lines.append(f"accuracy     {result['accuracy']:.2%}  ({result['n']} test images)")
    lines.append(
        f"params       {result['params']:,}  nonzero {result['nonzero']:,}  "
        f"sparsity {result['sparsity']:.1%}"
    )
    size = f"size         {result['size_bytes'] / 1e6:.2f} MB"
    if "size_gzip_bytes" in result:
        size += f"  (gzip {result['size_gzip_bytes'] / 1e6:.2f} MB)"
    lines.append(size)
    if "macs" in result:
        lines.append(f"MACs         {result['macs'] / 1e6:.1f} M")
    lat = result.get("latency_ms")
    if lat:
        lines.append(
            f"latency      p50 {lat['p50']:.2f} ms  p95 {lat['p95']:.2f} ms  (batch 1, "
            f"{lat['threads']} thread{'s' if lat['threads'] != 1 else ''}, PyTorch CPU)"
        )
        b = lat["batch32"]
        lines.append(
            f"             p50 {b['p50']:.2f} ms  p95 {b['p95']:.2f} ms  "
            f"per image in a batch of {b['batch']}"
        )
    labels = result["labels"]
    width = max(len(lb) for lb in labels)
    lines.append("")
    lines.append(f"{'class':<{width}}  accuracy  " + " ".join(f"{lb[:6]:>6}" for lb in labels))
    for i, lb in enumerate(labels):
        acc = result["per_class"][lb]
        acc_s = f"{acc:8.1%}" if acc is not None else "       -"
        row = " ".join(f"{v:>6}" for v in result["confusion"][i])
        lines.append(f"{lb:<{width}}  {acc_s}  {row}")
    lines.append(f"{'':<{width}}            (rows: true class, columns: predicted)")
    return "\n".join(lines)
