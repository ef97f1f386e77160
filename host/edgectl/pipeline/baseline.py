"""Train the baseline end to end: data, model, training, evaluation, checkpoint."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from edgectl.pipeline.checkpoint import save_checkpoint
from edgectl.pipeline.data import DataConfig, load_datasets
from edgectl.pipeline.evaluation import evaluate
from edgectl.pipeline.model import ARCH, build_model
from edgectl.pipeline.training import train


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def train_baseline(
    cfg: DataConfig,
    out: str | Path,
    epochs: int,
    batch_size: int,
    lr: float,
    weights: str = "none",
    width_mult: float = 1.0,
    threads: int | None = None,
    progress: bool = True,
    device: str | None = None,
    datasets: Any = None,
) -> dict[str, Any]:
    """Load data, build, train on ``device`` (default auto: ``compute.resolve``), evaluate
    (no latency: ``edgectl eval`` does that) and save.

    ``datasets``: the caller's already loaded ``load_datasets(cfg)`` (``build`` passes its
    own, so the images rendered and cached while training serve the fine-tune too instead
    of being rendered again: ~40 CPU-s for the default 16000 synthetic 64-px images).

    Returns ``{"checkpoint", "description", "metrics", "history", "seconds",
    "images_per_s", "threads"}``.
    """
    threads = threads or os.cpu_count() or 1
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train_baseline(
            cfg, out, epochs, batch_size, lr, weights, width_mult, threads, progress, device,
            datasets,
        )
    finally:
        torch.set_num_threads(before)


def _train_baseline(
    cfg: DataConfig,
    out: str | Path,
    epochs: int,
    batch_size: int,
    lr: float,
    weights: str,
    width_mult: float,
    threads: int,
    progress: bool,
    device: str | None = None,
    datasets: Any = None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    datasets = datasets if datasets is not None else load_datasets(cfg)
    torch.manual_seed(cfg.seed)  # the head and the rest of the init
    model = build_model(len(datasets.labels), weights=weights, width_mult=width_mult)
    history = train(
        model,
        datasets,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=cfg.seed,
        progress=progress,
        device=device,
    )
    metrics = evaluate(model, datasets, latency=False)
    meta = {
        "arch": ARCH,
        "width_mult": width_mult,
        "num_classes": len(datasets.labels),
        "labels": list(datasets.labels),
        "reject_labels": list(datasets.reject_labels),
        "input": datasets.input_spec.to_dict(),
        "data": cfg.to_dict(),
        "train": {
            **history["config"],
            "weights": weights,
            "history": history["epochs"],
            "seconds": history["seconds"],
            "images_per_s": history["images_per_s"],
        },
        "metrics": metrics,
        "created": utc_now(),
    }
    path = save_checkpoint(model, meta, out)
    return {
        "checkpoint": str(path),
        "description": datasets.description,
        "metrics": metrics,
        "history": history["epochs"],
        "seconds": time.perf_counter() - t0,
        "images_per_s": history["images_per_s"],
        "threads": threads,
    }
