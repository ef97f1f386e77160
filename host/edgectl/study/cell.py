"""One cell of the study: prune a copy of the baseline, fine-tune it, export the ONNX
FP32/INT8 pair and measure it (accuracy, size, MACs, latency on three runtimes)."""

from __future__ import annotations

import functools
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edge_common.bundle import sha256_file
from edge_common.errors import ConfigError
from edge_common.fileio import write_json_atomic
from edgectl.pipeline.training import fine_tune_hook
from edgectl.study.grid import (
    BASELINE,
    RUNTIMES,
    Cell,
    StudyConfig,
    finetune_chunks,
    prune_steps,
)

log = logging.getLogger("edgectl.study")


# --------------------------------------------------------------------------- runners


class Runner(Protocol):
    """Trains/loads the baseline and runs cells; the real one is :class:`TorchRunner`."""

    def baseline(self, cfg: StudyConfig, baseline_dir: Path) -> str:
        """Train, load or reuse the baseline in ``baseline_dir``; return a fingerprint of it."""

    def measure_baseline(self, cfg: StudyConfig) -> dict[str, Any]:
        """The baseline's row (same measurements as a cell)."""

    def cell(self, cfg: StudyConfig, cell: Cell) -> dict[str, Any]:
        """Prune a copy of the baseline for ``cell``, fine-tune, and return its row."""


class TorchRunner:
    """The real runner: edgectl's data, training, pruning, ONNX export and INT8 quantization."""

    def __init__(self) -> None:
        self._model: Any = None
        self._meta: dict[str, Any] = {}
        self._datasets: Any = None
        self._artifacts: tuple[Path, Path] | None = None
        self._baseline_params = 0
        self._train_s = 0.0

    # -- baseline

    def baseline(self, cfg: StudyConfig, baseline_dir: Path) -> str:
        from edgectl.pipeline.checkpoint import load_checkpoint, save_checkpoint
        from edgectl.pipeline.data import load_datasets
        from edgectl.pipeline.metrics import count_params

        self._datasets = load_datasets(cfg.data)
        ckpt = baseline_dir / "model.pt"
        key_file = baseline_dir / "study_key.json"
        key = cfg.baseline_key()
        if ckpt.is_file() and key_file.is_file():
            if json.loads(key_file.read_text()) != key:
                raise ConfigError(
                    f"{baseline_dir} holds a baseline made with other settings; "
                    "use a new --out (or the same options as before)"
                )
            model, meta = load_checkpoint(ckpt)
            log.info("study: reusing the baseline in %s", baseline_dir)
        elif cfg.from_model is not None:
            model, meta = load_checkpoint(cfg.from_model)
            if meta.get("pruning"):
                raise ConfigError(f"--from {cfg.from_model} is a pruned model, not a baseline")
            if meta.get("labels") and tuple(meta["labels"]) != tuple(self._datasets.labels):
                raise ConfigError(
                    f"--from {cfg.from_model} was trained on labels {meta['labels']}, "
                    f"the data has {list(self._datasets.labels)}"
                )
            meta = dict(meta, study={"from": str(cfg.from_model), "train_s": 0.0})
            save_checkpoint(model, meta, ckpt)
            write_json_atomic(key_file, key)
        else:
            from edgectl.pipeline.baseline import train_baseline

            train_baseline(
                cfg.data,
                ckpt,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                width_mult=cfg.width_mult,
                progress=cfg.progress,
                device=cfg.device,
            )
            model, meta = load_checkpoint(ckpt)
            meta = dict(meta, study={"train_s": float(meta["train"]["seconds"])})
            save_checkpoint(model, meta, ckpt)
            write_json_atomic(key_file, key)
        self._model, self._meta = model.eval(), meta
        self._train_s = float(meta.get("study", {}).get("train_s", 0.0))
        self._baseline_params = count_params(model)
        self._artifacts = _export_pair(model, baseline_dir, self._datasets, cfg)
        return sha256_file(ckpt)[:16]

    def measure_baseline(self, cfg: StudyConfig) -> dict[str, Any]:
        t0 = time.perf_counter()
        assert self._artifacts is not None, "baseline() first"
        row = self._measure(cfg, self._model, *self._artifacts, {"actual": 0.0})
        row.update(
            method=BASELINE,
            regime="none",
            target_sparsity=0.0,
            prune_steps=0,
            finetune_epochs=0,
            wall_s=self._train_s + time.perf_counter() - t0,
        )
        return row

    # -- cells

    def cell(self, cfg: StudyConfig, cell: Cell) -> dict[str, Any]:
        from edgectl.pipeline.prune_eval import PruneSpec, prune_and_evaluate

        t0 = time.perf_counter()
        steps = prune_steps(cfg, cell.regime, cell.target)
        chunks = finetune_chunks(len(self._datasets.train), cfg.finetune_epochs, steps, cell.seed)
        pruned = prune_and_evaluate(
            self._model, self._meta, self._datasets,
            PruneSpec(cell.method, cell.regime, cell.target, cfg.step),
            fine_tune=fine_tune_hook(self._datasets, chunks=chunks, lr=cfg.finetune_lr,
                                     batch_size=cfg.batch_size, seed=cell.seed,
                                     device=cfg.device)
            if cfg.finetune_epochs > 0
            else None,
            out=None, timing=False)  # the study times its cells itself (_latencies)
        model, report = pruned.model, pruned.report or {}
        with tempfile.TemporaryDirectory(prefix="edgectl-study-") as tmp:
            fp32, int8 = _export_pair(model, Path(tmp), self._datasets, cfg)
            row = self._measure(cfg, model, fp32, int8, report, pruned.metrics["accuracy"])
        row.update(
            method=cell.method,
            regime=cell.regime,
            target_sparsity=cell.target,
            prune_steps=len(report["steps"]),
            finetune_epochs=cfg.finetune_epochs,
            wall_s=time.perf_counter() - t0,
        )
        return row

    # -- measurement (the same code for the baseline and every cell)

    def _measure(
        self, cfg: StudyConfig, model: Any, fp32: Path, int8: Path, report: dict[str, Any],
        acc: float | None = None,
    ) -> dict[str, Any]:
        """Accuracy (FP32 and INT8), size, MACs and batch-1 latency on three runtimes;
        ``acc``: the FP32 test accuracy when already measured (a cell's evaluation)."""
        from edgectl.pipeline.metrics import (
            compressed_size,
            count_macs,
            count_nonzero,
            count_params,
        )
        from edgectl.pipeline.training import accuracy

        model = model.eval()
        row: dict[str, Any] = {
            "actual_sparsity": float(report["actual"]),
            "accuracy": float(acc if acc is not None
                              else accuracy(model, self._datasets.test)),
            "accuracy_int8": _ort_accuracy(int8, self._datasets.test, cfg.threads),
            "params": count_params(model),
            "nonzero": count_nonzero(model),
            "macs": count_macs(model, int(cfg.data.img_size)),
            "size_fp32_bytes": fp32.stat().st_size,
            "size_fp32_gz_bytes": compressed_size(fp32),
            "size_int8_bytes": int8.stat().st_size,
        }
        row["overall_sparsity"] = 1.0 - row["nonzero"] / (self._baseline_params or row["params"])
        assert self._artifacts is not None
        pair = {"model": (model, fp32, int8)}
        if model is not self._model:
            pair["baseline"] = (self._model, *self._artifacts)
        lat = _latencies(pair, int(cfg.data.img_size), cfg)
        for col, _ in RUNTIMES:
            row[col] = lat["model"][col]
            base = lat.get("baseline", lat["model"])[col]
            row[col.replace("latency_", "speedup_").replace("_ms", "")] = base / row[col]
        return row


def _export_pair(model: Any, folder: Path, datasets: Any, cfg: StudyConfig) -> tuple[Path, Path]:
    """``model.fp32.onnx`` (the bundle's exporter) and its INT8 QDQ twin in ``folder``,
    calibrated like ``edgectl quantize`` on un-augmented training images (never the test set).
    """
    from edgectl.pipeline.calibration import calibration_inputs
    from edgectl.pipeline.export import export_onnx
    from edgectl.pipeline.quantization import quantize_onnx

    for noisy in ("onnx_ir", "onnxscript", "onnxruntime"):  # INFO chatter on every cell
        logging.getLogger(noisy).setLevel(logging.WARNING)
    fp32 = export_onnx(model, folder / "model.fp32.onnx", int(cfg.data.img_size))
    int8 = quantize_onnx(
        fp32, folder / "model.int8.onnx", calibration_inputs(datasets, seed=cfg.seed0)
    )
    return Path(fp32), Path(int8)


def _ort_accuracy(path: Path, test: Any, threads: int) -> float:
    """Top-1 accuracy of an exported (batch-1) ONNX model over a torch test dataset."""
    import numpy as np

    from edge_common.runtime import open_session

    sess = open_session(path, threads=threads)
    correct = 0
    for x, y in test:
        logits = sess.run(np.asarray(x, dtype=np.float32)[None])
        correct += int(int(logits[0].argmax()) == int(y))
    return correct / max(1, len(test))


def _latencies(
    models: dict[str, tuple[Any, Path, Path]], img: int, cfg: StudyConfig
) -> dict[str, dict[str, float]]:
    """Median batch-1 latency (ms) of each model on PyTorch eager, ORT FP32 and ORT INT8.

    ``cfg.threads`` threads. Each model is measured twice and the lower median kept; with
    two models (a cell and the baseline) the rounds alternate, so a noisy neighbour hits
    both alike and the speedup columns compare like with like.
    """
    import numpy as np
    import torch

    from edge_common.runtime import open_session
    from edge_common.timing import best_of_rounds

    x = np.random.default_rng(0).standard_normal((1, 3, img, img)).astype(np.float32)
    xt = torch.from_numpy(x)
    fns: dict[str, dict[str, Callable[[], Any]]] = {}
    for name, (model, fp32, int8) in models.items():
        s32 = open_session(fp32, threads=cfg.threads)
        s8 = open_session(int8, threads=cfg.threads)
        fns[name] = {
            "latency_torch_ms": functools.partial(model, xt),
            "latency_ort_fp32_ms": functools.partial(s32.run, x),
            "latency_ort_int8_ms": functools.partial(s8.run, x),
        }
    out: dict[str, dict[str, float]] = {name: {} for name in models}
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with torch.inference_mode():
            for col, _ in RUNTIMES:  # the baseline alone gets the same best-of-two as a cell
                best = best_of_rounds({name: fns[name][col] for name in models}, rounds=2,
                                      warmup=cfg.latency_warmup, runs=cfg.latency_runs,
                                      min_time_s=cfg.latency_min_s)
                for name, p50 in best.items():
                    out[name][col] = p50
    finally:
        torch.set_num_threads(threads)
    return out
