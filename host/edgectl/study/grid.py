"""The pruning study (issue 7): heuristic × regime × target sparsity, from one baseline.

``run_study(cfg)`` trains (or reuses) one baseline, then runs every cell of the grid:
copy the baseline, prune it with the cell's method and regime to the cell's target,
fine-tune, measure. Each cell starts from the baseline (iterative cells never reuse the
model of a smaller iterative target), so a cell's definition does not depend on which
other cells were run. Each finished cell is saved atomically as ``OUT/cells/<id>.json``
with a key of everything that determines it, so ``resume=True`` skips exactly the cells
whose key still matches. The baseline checkpoint lives in ``OUT/baseline/``.

Outputs: ``results.csv`` / ``results.json`` (one row per method × regime × target, mean
over seeds, ``*_std`` columns when ``seeds > 1``, the baseline as its own row),
``cells.csv`` (one row per seed), ``accuracy.png``, ``size.png``, ``latency.png`` and
``report.md``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from edge_common.bundle import sha256_file
from edge_common.errors import ConfigError
from edge_common.fileio import write_bytes_atomic, write_json_atomic
from edgectl.pipeline.training import DEFAULT_LR, FINE_TUNE_LR, fine_tune_hook

log = logging.getLogger(__name__)

METHODS = ("unstructured", "structured")
REGIMES = ("oneshot", "iterative")
DEFAULT_SPARSITIES = (0.3, 0.5, 0.7)
DEFAULT_EPOCHS = 8  # baseline training epochs (= edgectl.pipeline.training.DEFAULT_EPOCHS)
# Fine-tune budget of every cell, in epochs of the training set: one-shot spends it after
# its single prune, iterative splits it evenly over its steps (same images seen in total).
DEFAULT_FINETUNE_EPOCHS = 1.0
DEFAULT_STEP = 0.2  # iterative: prune in steps of 0.2 of the original model
ACCURACY_TOLERANCE = 0.01  # best trade-off rule: within 1 point of the baseline
BASELINE = "baseline"

# (column, meaning) in table order; the glossary of report.md.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("method", "pruning heuristic: unstructured (global L1 weights) or structured (L2 channels)"),
    (
        "regime",
        "oneshot (one prune, then fine-tune) or iterative (prune in steps, fine-tune after each)",
    ),
    ("target_sparsity", "requested fraction of the baseline's parameters removed"),
    (
        "actual_sparsity",
        "measured as the method defines it (unstructured: zero fraction of conv/linear weights,"
        " classifier excluded; structured: fraction of the baseline's parameters removed)",
    ),
    ("overall_sparsity", "1 − nonzero params / baseline params (every parameter counted)"),
    ("accuracy", "top-1 test accuracy of the PyTorch FP32 model"),
    ("accuracy_delta", "accuracy − baseline accuracy"),
    ("accuracy_int8", "top-1 test accuracy of the ONNX INT8 model on ONNX Runtime"),
    ("params", "parameters (structured pruning shrinks the layers)"),
    ("nonzero", "nonzero parameters"),
    ("macs", "multiply-accumulates per image"),
    ("size_fp32_bytes", "ONNX FP32 file (dense: zeros are stored)"),
    ("size_fp32_gz_bytes", "gzip -9 of the ONNX FP32 file (what zeros buy on the wire)"),
    ("size_int8_bytes", "ONNX INT8 (QDQ, static) file"),
    ("latency_torch_ms", "median batch-1 latency, PyTorch eager"),
    ("latency_ort_fp32_ms", "median batch-1 latency, ONNX Runtime FP32"),
    ("latency_ort_int8_ms", "median batch-1 latency, ONNX Runtime INT8"),
    ("speedup_torch", "baseline eager latency / this eager latency, measured alternately"),
    ("speedup_ort_fp32", "the same on ORT FP32"),
    ("speedup_ort_int8", "the same on ORT INT8"),
    ("prune_steps", "pruning steps taken"),
    ("finetune_epochs", "fine-tune budget in epochs, split evenly over the steps (baseline: 0)"),
    ("wall_s", "wall time of the cell: prune + fine-tune + measure (baseline: train + measure)"),
    ("seeds", "repeats averaged in this row"),
)
COLUMN_NAMES = tuple(c for c, _ in COLUMNS)
METRICS = COLUMN_NAMES[3:-1]  # the numeric measurements averaged over seeds
INT_COLUMNS = (
    "params",
    "nonzero",
    "macs",
    "size_fp32_bytes",
    "size_fp32_gz_bytes",
    "size_int8_bytes",
    "prune_steps",
    "seeds",
)
RUNTIMES = (
    ("latency_torch_ms", "PyTorch eager"),
    ("latency_ort_fp32_ms", "ORT FP32"),
    ("latency_ort_int8_ms", "ORT INT8"),
)


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Cell:
    """One point of the grid, repeated once per seed."""

    method: str
    regime: str
    target: float
    seed: int

    @property
    def id(self) -> str:
        return f"{self.method}-{self.regime}-{self.target:.2f}-seed{self.seed}"


@dataclass
class StudyConfig:
    """Everything that defines a study. ``data`` is a ``DataConfig`` passed through as is."""

    out: Path
    data: Any = None
    methods: tuple[str, ...] = METHODS
    regimes: tuple[str, ...] = REGIMES
    sparsities: tuple[float, ...] = DEFAULT_SPARSITIES
    epochs: int = DEFAULT_EPOCHS
    finetune_epochs: float = DEFAULT_FINETUNE_EPOCHS
    step: float = DEFAULT_STEP
    from_model: Path | None = None
    seeds: int = 1
    resume: bool = False
    threads: int = 1
    width_mult: float = 1.0
    batch_size: int = 64
    lr: float = DEFAULT_LR  # Adam, as edgectl train
    finetune_lr: float = FINE_TUNE_LR  # as edgectl prune / build
    latency_runs: int = 50
    latency_warmup: int = 10
    latency_min_s: float = 0.5
    progress: bool = True

    def validate(self) -> None:
        """Raise ``ConfigError`` (one clear line) on any bad value."""
        from edgectl.pipeline.pruning import check_request

        if not self.methods or not self.regimes or not self.sparsities:
            raise ConfigError("the grid is empty: give at least one method, regime and sparsity")
        for m in self.methods:
            for r in self.regimes:
                for s in self.sparsities:
                    check_request(m, r, s, self.step)  # the one check of a pruning request
        for r in self.regimes:
            if r not in REGIMES:
                raise ConfigError(f"the study runs regimes {' and '.join(REGIMES)}, not {r!r}")
        if len(set(self.sparsities)) != len(self.sparsities):
            raise ConfigError(f"duplicate sparsities in {list(self.sparsities)}")
        for name in ("epochs", "seeds", "threads", "batch_size", "latency_runs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.latency_min_s < 0:
            raise ConfigError(f"latency time must be >= 0 s, got {self.latency_min_s}")
        if self.finetune_epochs < 0:
            raise ConfigError(f"finetune epochs must be >= 0, got {self.finetune_epochs}")
        if self.from_model is not None and not Path(self.from_model).exists():
            raise ConfigError(f"--from: checkpoint not found: {self.from_model}")

    def cells(self) -> list[Cell]:
        """The grid in run order: method, regime, target, then seed."""
        return [
            Cell(m, r, float(s), self.seed0 + k)
            for m in self.methods
            for r in self.regimes
            for s in sorted(self.sparsities)
            for k in range(self.seeds)
        ]

    @property
    def seed0(self) -> int:
        return int(getattr(self.data, "seed", 0) or 0)

    def data_dict(self) -> dict[str, Any]:
        d = self.data
        if d is None:
            return {}
        if hasattr(d, "to_dict"):
            return dict(d.to_dict())
        try:
            return asdict(d)
        except TypeError:
            return {"repr": repr(d)}

    def baseline_key(self) -> dict[str, Any]:
        """What determines the baseline checkpoint."""
        src = None
        if self.from_model is not None:
            src = sha256_file(_checkpoint_file(Path(self.from_model)))[:16]
        return {
            "data": self.data_dict(),
            "from": src,
            "epochs": None if src else self.epochs,
            "width_mult": self.width_mult,
            "batch_size": self.batch_size,
            "lr": self.lr,
        }

    def cell_settings(self) -> dict[str, Any]:
        """What determines every cell besides the cell itself and the baseline."""
        return {
            "finetune_epochs": self.finetune_epochs,
            "step": self.step,
            "batch_size": self.batch_size,
            "finetune_lr": self.finetune_lr,
            "threads": self.threads,
            "latency": [self.latency_warmup, self.latency_runs, self.latency_min_s],
            "data": self.data_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("data", "progress")}
        d["out"] = str(self.out)
        d["from_model"] = str(self.from_model) if self.from_model else None
        d["data"] = self.data_dict()
        return d


def iterative_steps(target: float, step: float) -> list[float]:
    """Step targets of the iterative regime, each against the original model; ends on target."""
    from edgectl.pipeline.schedules import linear_schedule

    return linear_schedule(target, step)


def prune_steps(cfg: StudyConfig, regime: str, target: float) -> int:
    """How many prune (and fine-tune) steps a cell takes."""
    return 1 if regime == "oneshot" else len(iterative_steps(target, cfg.step))


def finetune_chunks(n_train: int, epochs: float, steps: int, seed: int) -> list[list[int]]:
    """Training-set indices each step fine-tunes on: ``epochs`` seeded passes over the
    training set, cut into ``steps`` equal consecutive chunks (one pass over each chunk).

    So one-shot and iterative cells see the same images in total, whatever the step count.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    total = int(round(epochs * n_train))
    order = np.concatenate([rng.permutation(n_train) for _ in range(max(1, math.ceil(epochs)))])[
        :total
    ]
    return [chunk.tolist() for chunk in np.array_split(order, steps)]


def cell_key(cfg: StudyConfig, cell: Cell, baseline_fp: str) -> str:
    """A digest of everything that determines a cell's result; a changed key means rerun."""
    blob = json.dumps(
        {"cell": asdict(cell), "settings": cfg.cell_settings(), "baseline": baseline_fp},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
            )
            model, meta = load_checkpoint(ckpt)
            meta = dict(meta, study={"train_s": float(meta["train"]["seconds"])})
            save_checkpoint(model, meta, ckpt)
            write_json_atomic(key_file, key)
        self._model = model.eval()
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
        from edgectl.pipeline.pruning import prune_model

        t0 = time.perf_counter()
        steps = prune_steps(cfg, cell.regime, cell.target)
        chunks = finetune_chunks(len(self._datasets.train), cfg.finetune_epochs, steps, cell.seed)
        model, report = prune_model(
            copy.deepcopy(self._model),
            cell.method,
            cell.regime,
            cell.target,
            step=cfg.step,
            img_size=int(cfg.data.img_size),
            original_params=self._baseline_params,
            fine_tune=fine_tune_hook(self._datasets, chunks=chunks, lr=cfg.finetune_lr,
                                     batch_size=cfg.batch_size, seed=cell.seed)
            if cfg.finetune_epochs > 0
            else None,
        )
        with tempfile.TemporaryDirectory(prefix="edgectl-study-") as tmp:
            fp32, int8 = _export_pair(model, Path(tmp), self._datasets, cfg)
            row = self._measure(cfg, model, fp32, int8, report)
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
        self, cfg: StudyConfig, model: Any, fp32: Path, int8: Path, report: dict[str, Any]
    ) -> dict[str, Any]:
        """Accuracy (FP32 and INT8), size, MACs and batch-1 latency on three runtimes."""
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
            "accuracy": float(accuracy(model, self._datasets.test)),
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

    kw = {"warmup": cfg.latency_warmup, "runs": cfg.latency_runs, "min_time_s": cfg.latency_min_s}
    x = np.random.default_rng(0).standard_normal((1, 3, img, img)).astype(np.float32)
    xt = torch.from_numpy(x)
    fns: dict[str, dict[str, Callable[[], Any]]] = {}
    for name, (model, fp32, int8) in models.items():
        s32 = open_session(fp32, threads=cfg.threads)
        s8 = open_session(int8, threads=cfg.threads)
        fns[name] = {
            "latency_torch_ms": lambda m=model: m(xt),
            "latency_ort_fp32_ms": lambda s=s32: s.run(x),
            "latency_ort_int8_ms": lambda s=s8: s.run(x),
        }
    out: dict[str, dict[str, float]] = {name: {} for name in models}
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with torch.inference_mode():
            for col, _ in RUNTIMES:  # the baseline alone gets the same best-of-two as a cell
                best = best_of_rounds({name: fns[name][col] for name in models}, rounds=2, **kw)
                for name, p50 in best.items():
                    out[name][col] = p50
    finally:
        torch.set_num_threads(threads)
    return out


def _checkpoint_file(p: Path) -> Path:
    return p / "model.pt" if p.is_dir() else p


# --------------------------------------------------------------------------- the run


@dataclass
class StudyResult:
    """What ``run_study`` produced: the table, the per-seed rows, file paths, the pick."""

    table: pd.DataFrame
    cells: pd.DataFrame
    files: dict[str, Path]
    best: dict[str, Any] | None
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


def run_study(
    cfg: StudyConfig, runner: Runner | None = None, echo: Callable[[str], None] | None = None
) -> StudyResult:
    """Run (or resume) the study described by ``cfg`` and write its outputs under ``cfg.out``."""
    cfg.validate()
    out = Path(cfg.out)
    cells_dir, baseline_dir = out / "cells", out / "baseline"
    if not cfg.resume and (any(cells_dir.glob("*.json")) or (baseline_dir / "model.pt").exists()):
        raise ConfigError(
            f"{out} already holds a study: pass --resume to continue it, or choose another --out"
        )
    fresh = not out.exists()
    cells_dir.mkdir(parents=True, exist_ok=True)
    baseline_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "study.json", cfg.to_dict())
    runner = runner or TorchRunner()
    say = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t_start = time.perf_counter()

    say("study: baseline")
    try:
        fingerprint = runner.baseline(cfg, baseline_dir)
    except BaseException:
        if fresh:  # e.g. a data folder that does not exist: leave nothing behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    base_cell = Cell(BASELINE, "none", 0.0, cfg.seed0)
    base_key = cell_key(cfg, base_cell, fingerprint)
    base_row = _load_cell(cells_dir / f"{BASELINE}.json", base_key) if cfg.resume else None
    if base_row is None:
        base_row = runner.measure_baseline(cfg)
        _save_cell(cells_dir / f"{BASELINE}.json", base_key, base_cell, base_row)

    grid = cfg.cells()
    rows: list[dict[str, Any]] = []
    computed: list[str] = []
    reused: list[str] = []
    todo: list[tuple[Cell, str]] = []
    for cell in grid:
        key = cell_key(cfg, cell, fingerprint)
        cached = _load_cell(cells_dir / f"{cell.id}.json", key) if cfg.resume else None
        if cached is not None:
            rows.append(cached)
            reused.append(cell.id)
        else:
            todo.append((cell, key))
    if reused:
        say(f"study: resuming, {len(reused)} of {len(grid)} cells already done")
    t_cells = time.perf_counter()
    bar = _bar(len(todo), cfg.progress)
    try:
        for k, (cell, key) in enumerate(todo, start=1):
            bar.set_postfix_str(cell.id)
            row = dict(runner.cell(cfg, cell), seed=cell.seed)
            _save_cell(cells_dir / f"{cell.id}.json", key, cell, row)
            rows.append(row)
            computed.append(cell.id)
            bar.update(1)
            elapsed = time.perf_counter() - t_cells
            eta = elapsed / k * (len(todo) - k)
            bar.write(
                f"cell {len(reused) + k}/{len(grid)} {cell.id}: accuracy {row['accuracy']:.3f}, "
                f"sparsity {row['actual_sparsity']:.3f}, {row['wall_s']:.0f} s "
                f"(elapsed {_hms(elapsed)}, ETA {_hms(eta)})",
                file=sys.stderr,
            )
    finally:
        bar.close()

    per_seed = pd.DataFrame(rows)
    table = build_table(base_row, rows, seeds=cfg.seeds)
    files = write_outputs(table, per_seed, cfg, out, wall_s=time.perf_counter() - t_start)
    return StudyResult(table, per_seed, files, best_tradeoff(table), computed, reused)


def _load_cell(path: Path, key: str) -> dict[str, Any] | None:
    """A finished cell's row if its file exists and its key matches, else None."""
    try:
        blob = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if blob.get("key") != key:
        if path.exists():
            log.info("study: %s was made with other settings; rerunning it", path.name)
        return None
    return dict(blob["result"])


def _save_cell(path: Path, key: str, cell: Cell, row: dict[str, Any]) -> None:
    write_json_atomic(path, {"key": key, "cell": asdict(cell), "result": row})


def _bar(n: int, enabled: bool) -> Any:
    """A tqdm bar over cells (count, rate, ETA) on stderr."""
    from tqdm import tqdm

    return tqdm(total=n, unit="cell", desc="study", disable=not enabled or n == 0, file=sys.stderr)


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


# --------------------------------------------------------------------------- the table


def build_table(
    baseline: dict[str, Any], rows: Sequence[dict[str, Any]], seeds: int = 1
) -> pd.DataFrame:
    """Baseline row first, then the mean over seeds per (method, regime, target).

    With ``seeds > 1`` every metric also gets a ``*_std`` column (sample std; 0 for the
    baseline, which is measured once)."""
    base = {c: baseline.get(c) for c in COLUMN_NAMES}
    base.update(method=BASELINE, regime="none", target_sparsity=0.0, accuracy_delta=0.0, seeds=1)
    frame = pd.DataFrame(list(rows))
    keys = ["method", "regime", "target_sparsity"]
    metrics = [m for m in METRICS if m != "accuracy_delta"]
    if frame.empty:
        table = pd.DataFrame([base], columns=list(COLUMN_NAMES))
    else:
        grouped = frame.groupby(keys, sort=False)
        mean = grouped[metrics].mean()
        mean["seeds"] = grouped.size()
        mean = mean.reset_index()
        mean["accuracy_delta"] = mean["accuracy"] - float(baseline["accuracy"])
        table = pd.concat([pd.DataFrame([base]), mean], ignore_index=True)[list(COLUMN_NAMES)]
        if seeds > 1:
            std = grouped[metrics].std(ddof=1).fillna(0.0).reset_index()
            std = std.rename(columns={m: f"{m}_std" for m in metrics})
            table = table.merge(std, on=keys, how="left")
            table.loc[table["method"] == BASELINE, [f"{m}_std" for m in metrics]] = 0.0
    if seeds > 1 and "accuracy_std" not in table:
        for m in metrics:
            table[f"{m}_std"] = 0.0
    for c in INT_COLUMNS:
        table[c] = table[c].round().astype("int64")
    order = {m: i for i, m in enumerate((BASELINE, "none", *METHODS, *REGIMES))}
    table = table.sort_values(
        by=["method", "regime", "target_sparsity"],
        key=lambda s: s.map(order) if s.name != "target_sparsity" else s,
        kind="stable",
    ).reset_index(drop=True)
    return table


def best_tradeoff(
    table: pd.DataFrame, tolerance: float = ACCURACY_TOLERANCE
) -> dict[str, Any] | None:
    """The fastest deployable artifact (ORT FP32 or ORT INT8, batch 1) whose own accuracy is
    within ``tolerance`` of the baseline's FP32 accuracy; the baseline's artifacts compete too."""
    base = table[table["method"] == BASELINE].iloc[0]
    floor = float(base["accuracy"]) - tolerance
    candidates = []
    for _, r in table.iterrows():
        for precision, acc_col, lat_col in (
            ("fp32", "accuracy", "latency_ort_fp32_ms"),
            ("int8", "accuracy_int8", "latency_ort_int8_ms"),
        ):
            if float(r[acc_col]) >= floor - 1e-12:
                candidates.append((float(r[lat_col]), r, precision, acc_col, lat_col))
    if not candidates:
        return None
    lat, r, precision, acc_col, _ = min(candidates, key=lambda c: c[0])
    return {
        "method": r["method"],
        "regime": r["regime"],
        "target_sparsity": float(r["target_sparsity"]),
        "actual_sparsity": float(r["actual_sparsity"]),
        "precision": precision,
        "accuracy": float(r[acc_col]),
        "latency_ms": lat,
        "speedup_vs_baseline_fp32": float(base["latency_ort_fp32_ms"]) / lat
        if lat
        else float("nan"),
        "rule": "fastest ONNX Runtime artifact (FP32 or INT8, batch 1) whose own accuracy is"
        f" at most {tolerance * 100:g} point(s) below the baseline's FP32 accuracy",
    }


# --------------------------------------------------------------------------- outputs


def write_outputs(
    table: pd.DataFrame, per_seed: pd.DataFrame, cfg: StudyConfig, out: Path, wall_s: float = 0.0
) -> dict[str, Path]:
    """results.csv/json, cells.csv, the three plots and report.md, each written atomically."""
    files = {"csv": out / "results.csv", "json": out / "results.json", "cells": out / "cells.csv"}
    write_bytes_atomic(files["csv"], table.to_csv(index=False).encode())
    write_bytes_atomic(files["json"], (table.to_json(orient="records", indent=2) + "\n").encode())
    write_bytes_atomic(files["cells"], per_seed.to_csv(index=False).encode())
    files.update(plot_study(table, out))
    files["report"] = write_report(table, cfg, out, files, wall_s)
    return files


def _series(table: pd.DataFrame) -> Iterable[tuple[str, pd.DataFrame]]:
    pruned = table[table["method"] != BASELINE]
    for (method, regime), g in pruned.groupby(["method", "regime"], sort=False):
        yield f"{method} {regime}", g.sort_values("actual_sparsity")


def _plot(
    table: pd.DataFrame, panels: Sequence[tuple[str, str, float]], path: Path, title: str
) -> Path:
    """One panel per (column, y label, scale); one line per method × regime; baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = table[table["method"] == BASELINE].iloc[0]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    colours = {m: f"C{i}" for i, m in enumerate(METHODS)}
    styles = {"oneshot": ("-", "o"), "iterative": ("--", "s")}
    for ax, (col, ylabel, scale) in zip(axes[0], panels, strict=True):
        for label, g in _series(table):
            method, regime = label.split(" ")
            err = g[f"{col}_std"] * scale if f"{col}_std" in g else None
            ls, marker = styles.get(regime, ("-", "o"))
            ax.errorbar(
                g["actual_sparsity"],
                g[col] * scale,
                yerr=err,
                color=colours.get(method),
                ls=ls,
                marker=marker,
                ms=4,
                capsize=3,
                label=label,
            )
        ax.axhline(base[col] * scale, color="black", ls="--", lw=1, label="baseline")
        ax.plot([base["actual_sparsity"]], [base[col] * scale], "k*", ms=10)
        ax.set_xlabel("actual sparsity")
        ax.set_ylabel(ylabel)
        if not col.startswith("accuracy"):
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with tempfile.NamedTemporaryFile(suffix=".png", dir=path.parent, delete=False) as fh:
        tmp = Path(fh.name)
    try:
        fig.savefig(tmp, dpi=90)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def plot_study(table: pd.DataFrame, out: Path) -> dict[str, Path]:
    """accuracy.png, size.png, latency.png (PNG, Agg backend)."""
    return {
        "accuracy_png": _plot(
            table,
            [
                ("accuracy", "top-1 accuracy (%)", 100.0),
                ("accuracy_int8", "INT8 top-1 accuracy (%)", 100.0),
            ],
            out / "accuracy.png",
            "Accuracy against sparsity",
        ),
        "size_png": _plot(
            table,
            [
                ("size_fp32_bytes", "ONNX FP32 (KB)", 1e-3),
                ("size_fp32_gz_bytes", "gzip ONNX FP32 (KB)", 1e-3),
                ("size_int8_bytes", "ONNX INT8 (KB)", 1e-3),
            ],
            out / "size.png",
            "Size on disk against sparsity",
        ),
        "latency_png": _plot(
            table,
            [(c, f"{name} p50 (ms)", 1.0) for c, name in RUNTIMES],
            out / "latency.png",
            "Batch-1 latency against sparsity",
        ),
    }


_STD_SHOWN = ("accuracy", "accuracy_int8", "actual_sparsity", *(c for c, _ in RUNTIMES))


def markdown_table(table: pd.DataFrame) -> str:
    """The results table as GitHub markdown, numbers formatted for people."""
    cols = [
        ("method", "method", str),
        ("regime", "regime", str),
        ("target_sparsity", "target", "{:.2f}".format),
        ("actual_sparsity", "actual", "{:.3f}".format),
        ("accuracy", "acc %", lambda v: f"{v * 100:.1f}"),
        ("accuracy_delta", "Δ pts", lambda v: f"{v * 100:+.1f}"),
        ("accuracy_int8", "INT8 acc %", lambda v: f"{v * 100:.1f}"),
        ("params", "params", "{:,}".format),
        ("nonzero", "nonzero", "{:,}".format),
        ("macs", "MMACs", lambda v: f"{v / 1e6:.1f}"),
        ("size_fp32_bytes", "FP32 KB", lambda v: f"{v / 1e3:.0f}"),
        ("size_fp32_gz_bytes", "FP32 gz KB", lambda v: f"{v / 1e3:.0f}"),
        ("size_int8_bytes", "INT8 KB", lambda v: f"{v / 1e3:.0f}"),
        ("latency_torch_ms", "eager ms", "{:.2f}".format),
        ("latency_ort_fp32_ms", "ORT FP32 ms", "{:.2f}".format),
        ("latency_ort_int8_ms", "ORT INT8 ms", "{:.2f}".format),
        ("finetune_epochs", "FT ep", "{:g}".format),
        ("wall_s", "wall s", "{:.0f}".format),
    ]
    std = "accuracy_std" in table
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        cells = []
        for col, _, fmt in cols:
            text = fmt(r[col])
            if std and col in _STD_SHOWN and r["method"] != BASELINE:
                s = r[f"{col}_std"]
                text += f" ± {s * 100:.1f}" if col.startswith("accuracy") else f" ± {s:.2f}"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    table: pd.DataFrame, cfg: StudyConfig, out: Path, files: dict[str, Path], wall_s: float
) -> Path:
    """report.md: settings, table, plots, the best trade-off by a stated rule, glossary."""
    base = table[table["method"] == BASELINE].iloc[0]
    best = best_tradeoff(table)
    grid = (
        f"{len(cfg.methods)} methods × {len(cfg.regimes)} regimes"
        f" × {len(cfg.sparsities)} sparsities"
    )
    d = cfg.data_dict()
    baseline = (
        f"reused from `{cfg.from_model}`"
        if cfg.from_model
        else f"MobileNetV2 width {cfg.width_mult:g}, trained {cfg.epochs} epochs"
    )
    sizes = f"{d.get('train_size') or 'default'} train / {d.get('test_size') or 'default'} test"
    lines = [
        "# Pruning study",
        "",
        f"Grid: {grid} × {cfg.seeds} seed(s). Every cell is pruned from the same baseline "
        f"({baseline}) and fine-tuned; data `{d.get('spec', '?')}` ({sizes} images) "
        f"at {int(cfg.data.img_size)} px.",
        "",
        f"- Fine-tune budget: {cfg.finetune_epochs:g} epoch(s) of the training set per cell "
        "(Adam, cosine decay, pruned weights held at zero). One-shot prunes once to the target "
        "and spends it all; iterative splits it evenly over its steps, so both see the same "
        "images.",
        f"- Iterative: prune in steps of {cfg.step:g} (sparsity of the original model, the last "
        "step lands exactly on the target), fine-tuning on its share of the budget after each "
        "step.",
        f"- Latency: batch 1, {cfg.threads} thread(s), median of ≥ {cfg.latency_runs} runs; each "
        "cell is timed alternately with the baseline (best of two medians each) in the same run, "
        "so the speedup columns compare like with like. Compare ratios, not absolute ms, across "
        "machines.",
        "- Compressed size: gzip -9 of the ONNX FP32 file.",
        f"- Wall time of this invocation: {wall_s / 60:.1f} min (cells reused by --resume cost "
        "nothing).",
        "",
        "## Results",
        "",
        markdown_table(table),
        "",
    ]
    if cfg.seeds > 1:
        lines += [
            "Pruned rows are mean ± standard deviation over seeds (baseline measured once).",
            "",
        ]
    lines += ["## Plots", ""]
    for key in ("accuracy_png", "size_png", "latency_png"):
        lines += [f"![{key[:-4]}]({files[key].name})", ""]
    lines += ["## Best trade-off", ""]
    if best is None:
        lines.append(f"No artifact is within {ACCURACY_TOLERANCE * 100:g} point of the baseline.")
    else:
        name = (
            BASELINE
            if best["method"] == BASELINE
            else (f"{best['method']} {best['regime']} {best['target_sparsity']:.2f}")
        )
        lines.append(
            f"Rule: the {best['rule']}. Pick: **{name}, ORT {best['precision'].upper()}** — "
            f"{best['latency_ms']:.2f} ms, accuracy {best['accuracy'] * 100:.1f}% "
            f"(baseline {base['accuracy'] * 100:.1f}%), {best['speedup_vs_baseline_fp32']:.2f}× "
            f"faster than the baseline on ORT FP32."
        )
    lines += (
        ["", "## Columns", ""]
        + [f"- `{c}`: {d}" for c, d in COLUMNS]
        + ["- `*_std`: standard deviation over seeds (only with --seeds > 1)", ""]
    )
    path = out / "report.md"
    write_bytes_atomic(path, "\n".join(lines).encode())
    return path


def copy_report(out: Path, dest: Path) -> None:
    """Copy report.md, the plots and results.csv to ``dest`` (for docs/study/)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in (
        "report.md",
        "results.csv",
        "results.json",
        "accuracy.png",
        "size.png",
        "latency.png",
    ):
        shutil.copy2(out / name, dest / name)
