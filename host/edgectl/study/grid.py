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

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_common.bundle import sha256_file
from edge_common.errors import ConfigError
from edge_common.hashing import settings_key
from edgectl.pipeline.training import DEFAULT_LR, FINE_TUNE_LR

log = logging.getLogger("edgectl.study")

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
    device: str = "auto"  # where training and fine-tuning run (compute.resolve)
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
            from edgectl.pipeline.checkpoint import resolve

            src = sha256_file(resolve(self.from_model))[:16]
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
    return settings_key(
        {"cell": asdict(cell), "settings": cfg.cell_settings(), "baseline": baseline_fp})


