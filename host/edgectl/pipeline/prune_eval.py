"""Prune and evaluate: a pruned, fine-tuned copy of a baseline, saved, evaluated and timed
against it. The one path behind ``edgectl build``'s prune stage, ``edgectl prune`` and
each cell of the study (which measures its cells its own way and so asks for no timing).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from torch import nn

from edgectl.pipeline import pruning
from edgectl.pipeline.build_results import PruneResult
from edgectl.pipeline.data import Datasets
from edgectl.pipeline.pruning import FineTune


@dataclass(frozen=True)
class PruneSpec:
    """What to prune: ``method`` ``none`` (fine-tune only), ``unstructured`` or
    ``structured``, to ``sparsity`` on ``regime``'s schedule (``pruning.prune_model``)."""

    method: str
    regime: str = "oneshot"
    sparsity: float = 0.5
    step: float = 0.1
    round_to: int | None = 8     # structured: channel counts multiples of this (None = off)
    exclude_classifier: bool = True
    global_pruning: bool = False


def save_and_evaluate(model: nn.Module, meta: dict[str, Any], datasets: Datasets,
                      path: Path | None, *, threads: int = 1, latency_runs: int = 30,
                      latency: bool = True) -> tuple[Path | None, dict[str, Any]]:
    """``(checkpoint, metrics)``: ``model`` saved at ``path`` (none when None), evaluated on
    the test set (size from the file, latency when asked), then saved again with its
    metrics in ``meta["metrics"]`` (it replaces the parent's, which ``meta`` inherits)."""
    from edgectl.pipeline.checkpoint import save_checkpoint
    from edgectl.pipeline.evaluation import evaluate

    meta = dict(meta)
    meta.pop("code_version", None)     # save_checkpoint stamps this run's version
    meta.pop("metrics", None)
    ckpt = save_checkpoint(model, meta, path) if path is not None else None
    metrics = evaluate(model, datasets, threads=threads, checkpoint_path=ckpt,
                       latency=latency, latency_runs=latency_runs)
    if ckpt is not None:
        save_checkpoint(model, {**meta, "metrics": metrics}, ckpt)
    return ckpt, metrics


def prune_and_evaluate(
    base: nn.Module,
    base_meta: dict[str, Any],
    datasets: Datasets,
    spec: PruneSpec,
    *,
    fine_tune: FineTune | None,
    out: Path | None,
    meta: dict[str, Any] | None = None,
    record: dict[str, Any] | None = None,
    threads: int = 1,
    latency_runs: int = 30,
    timing: bool = True,
    progress: bool = False,
) -> PruneResult:
    """Prune a copy of ``base`` by ``spec`` (``base`` is left as it was), fine-tuning with
    ``fine_tune`` after every step (``none``: fine-tune once, if given); save it at ``out``
    (none when None) with ``base_meta`` + ``meta`` + the pruning report (+ ``record``);
    evaluate it on the test set; with ``timing``, its latency and ``speed.measure_speed``
    dense vs pruned in one run. ``base_meta`` says whether ``base`` is itself pruned
    (``pruning.lineage``: sparsity stays against the original)."""
    model = copy.deepcopy(base)
    report: dict[str, Any] | None = None
    if spec.method == "none":
        if fine_tune is not None:
            fine_tune(model, None)
    else:
        orig_params, orig_channels = pruning.lineage(base_meta, base)
        model, report = pruning.prune_model(
            model, spec.method, spec.regime, spec.sparsity, step=spec.step,
            img_size=datasets.input_spec.size, round_to=spec.round_to,
            exclude_classifier=spec.exclude_classifier, global_pruning=spec.global_pruning,
            original_params=orig_params, original_channels=orig_channels,
            fine_tune=fine_tune, progress=progress)
        report.update(record or {})
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    ckpt, metrics = save_and_evaluate(
        model, {**base_meta, **(meta or {}), "pruning": report, "created": created},
        datasets, out, threads=threads, latency_runs=latency_runs, latency=timing)
    sparsity, speed = 0.0, None
    if report is not None:
        sparsity = float(pruning.current_sparsity(model, spec.method,
                                                  int(report["original_params"]),
                                                  spec.exclude_classifier))
        if timing:
            from edgectl.pipeline.speed import measure_speed

            speed = measure_speed(base, model, datasets.input_spec.size, spec.method,
                                  threads=threads, runs=latency_runs,
                                  min_time_s=min(0.5, 0.01 * latency_runs))
    return PruneResult(model, report, ckpt, metrics, sparsity, speed)
