"""Build for a latency budget: ``edgectl build --target-latency-ms MS``.

The prune stage of :func:`build.run_build` replaced by the NetAdapt search
(:mod:`edgectl.pipeline.netadapt`) against an :class:`Oracle` for one target — its latency
table (estimates) and end-to-end measurements there — followed by the build's usual long
fine-tune, export, INT8, evaluation and signed bundle, whose manifest records the budget,
the target and the measured latency (``deadline``; the agent checks it on the board).

What a search costs is set here: each proposal's short fine-tune sees ``short_images``
training images (a different slice each time), and proposals are compared on
``selection_images`` held out of the training set (never the test set).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from edge_common.errors import ConfigError, EdgeError
from edgectl.pipeline import netadapt
from edgectl.pipeline.build_results import BaselineResult, PruneResult

Echo = Callable[[str], None]


class Oracle(Protocol):
    """Latency of one target (a board over SSH, or this machine) for one runtime,
    precision and thread count."""

    def estimate(self, keep: netadapt.Keep) -> float: ...       # ms, from the table
    def measure(self, model: nn.Module) -> float: ...           # p95 ms, end to end
    def facts(self) -> dict[str, Any]: ...                      # device, cpu, runtime, …


class BudgetNotMet(EdgeError, RuntimeError):
    """No model within the accuracy drop meets the budget; the message names the closest
    point and what would meet it."""


@dataclass
class DeadlineConfig:
    budget_ms: float
    target: str = "local"
    threads: int = 1
    runtime: str = "onnx"
    precision: str = "fp32"
    max_accuracy_drop: float = 1.0   # points of test accuracy against the baseline
    short_images: int = 1024
    selection_images: int = 1000
    plan: netadapt.Plan | None = None
    state: Path | None = None        # resumable search state (default: under OUT)
    extra: dict[str, Any] = field(default_factory=dict)

    def search_plan(self) -> netadapt.Plan:
        return self.plan or netadapt.Plan(budget_ms=self.budget_ms)

    def validate(self) -> None:
        self.search_plan().validate()
        if self.runtime not in ("onnx", "tflite") or self.precision not in ("fp32", "int8"):
            raise ConfigError(f"runtime must be onnx|tflite and precision fp32|int8, got "
                              f"{self.runtime}/{self.precision}")
        if not 0.0 <= self.max_accuracy_drop <= 100.0:
            raise ConfigError(f"--max-accuracy-drop must be in [0, 100] points, got "
                              f"{self.max_accuracy_drop}")
        if self.short_images < 1 or self.selection_images < 1:
            raise ConfigError("short fine-tune and selection sizes must be positive")


def split_selection(datasets: Any, n: int, seed: int) -> tuple[Any, Any]:
    """``(tune, selection)``: the training set without ``n`` held-out images, and those
    images (same frames, the test transform). Deterministic for ``seed``."""
    import torch
    from torch.utils.data import Subset

    total = len(datasets.train)
    if n >= total:
        raise ConfigError(f"selection set of {n} images leaves nothing of the {total} "
                          "training images to fine-tune on")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed)).tolist()
    held, rest = order[:n], order[n:]
    sel = copy.copy(datasets.train)
    if hasattr(sel, "transform") and hasattr(datasets.test, "transform"):
        sel.transform = datasets.test.transform   # no augmentation when scoring
    return (dataclasses.replace(datasets, train=Subset(datasets.train, rest)),
            Subset(sel, held))


def search_stage(dl: DeadlineConfig, oracle: Oracle,
                 progress: Callable[[netadapt.Step], None] | None = None) -> Any:
    """A prune stage for :func:`build.run_build`: search, then the build's long fine-tune
    (``--finetune-epochs``), then evaluate and time it like every build."""

    def stage(cfg: Any, datasets: Any, base: BaselineResult, echo: Echo) -> PruneResult:
        from torch.utils.data import Subset

        from edgectl.pipeline import pruning
        from edgectl.pipeline.checkpoint import code_version, save_checkpoint
        from edgectl.pipeline.evaluation import evaluate
        from edgectl.pipeline.training import accuracy, fine_tune, fine_tune_hook

        tune_set, selection = split_selection(datasets, dl.selection_images, cfg.data.seed)
        n_tune = len(tune_set.train)
        size = datasets.input_spec.size

        def short_tune(model: nn.Module, step: int, stage_k: int) -> None:
            # a different slice of the training set for every proposal, as the paper's
            # short-term fine-tune sees a few thousand iterations of fresh batches
            k = step * netadapt.STAGES + stage_k
            idx = [(k * dl.short_images + j) % n_tune for j in range(dl.short_images)]
            part = dataclasses.replace(tune_set, train=Subset(tune_set.train, idx))
            fine_tune(model, part, epochs=1, batch_size=cfg.batch_size, seed=cfg.data.seed + k,
                      progress=False, eval_each_epoch=False)

        plan = dl.search_plan()
        state_dir = dl.state or cfg.out / "search"
        key = plan.key({"baseline": base.checkpoint.name, "meta": base.meta.get("key"),
                        "oracle": oracle.facts(), "short": dl.short_images,
                        "selection": dl.selection_images, "seed": cfg.data.seed})
        res = netadapt.search(copy.deepcopy(base.model), base.model, size, plan,
                              estimate=oracle.estimate, measure=oracle.measure,
                              tune=short_tune, score=lambda m: accuracy(m.eval(), selection),
                              state_dir=state_dir, state_key=key, echo=echo, on_step=progress)
        model = res.model
        if cfg.finetune_epochs:
            echo(f"  long fine-tune: {cfg.finetune_epochs} epoch(s)")
            fine_tune_hook(tune_set, cfg.finetune_epochs, batch_size=cfg.batch_size,
                           seed=cfg.data.seed, progress=cfg.progress)(model, None)
        final_ms = oracle.measure(model)
        report = {"method": "deadline", "budget_ms": dl.budget_ms, "keep": res.keep,
                  "met": final_ms <= dl.budget_ms, "stop": res.stop,
                  "start_ms": res.start_ms, "start_est_ms": res.start_est_ms,
                  "final_ms": final_ms, "final_est_ms": oracle.estimate(tuple(res.keep)),
                  "steps": [dataclasses.asdict(s) for s in res.steps],
                  "estimation_error": netadapt.estimation_errors(res.steps),
                  "oracle": oracle.facts(), "plan": dataclasses.asdict(plan)}
        meta = {**base.meta, "pruning": report, "code_version": code_version()}
        ckpt = save_checkpoint(model, meta, cfg.out / "model" / "model.pt")
        metrics = evaluate(model, datasets, threads=cfg.threads, checkpoint_path=ckpt,
                           latency=True, latency_runs=cfg.latency_runs)
        echo(f"  searched model: accuracy {metrics['accuracy']:.2%} (baseline "
             f"{base.metrics['accuracy']:.2%}), {final_ms:.3f} ms p95 measured on "
             f"{oracle.facts().get('device')} (budget {dl.budget_ms:g} ms)")
        check_result(dl, base.metrics["accuracy"], metrics["accuracy"], final_ms, res.keep)
        orig_params, _ = pruning.lineage(base.meta, base.model)
        sparsity = float(pruning.current_sparsity(model, "structured", orig_params))
        return PruneResult(model, report, ckpt, metrics, sparsity, None)

    return stage


def check_result(dl: DeadlineConfig, base_acc: float, acc: float, measured_ms: float,
                 keep: list[float]) -> None:
    """Raise :class:`BudgetNotMet` naming the closest point and what would meet it."""
    drop = (base_acc - acc) * 100
    if measured_ms <= dl.budget_ms and drop <= dl.max_accuracy_drop:
        return
    what = []
    if measured_ms > dl.budget_ms:
        what.append(f"a budget of {math.ceil(measured_ms * 100) / 100:g} ms")
    if drop > dl.max_accuracy_drop:
        what.append(f"--max-accuracy-drop {math.ceil(drop * 10) / 10:g}")
    other = "tflite" if dl.runtime == "onnx" else "onnx"
    raise BudgetNotMet(
        f"nothing meets {dl.budget_ms:g} ms within {dl.max_accuracy_drop:g} points: the "
        f"closest is {measured_ms:.3f} ms p95 at {acc:.2%} ({drop:+.1f} points from the "
        f"baseline {base_acc:.2%}), keep {[round(k, 3) for k in keep]}; it would meet "
        f"{' and '.join(what)}, or try --runtime {other} or --precision int8")


def manifest_section(dl: DeadlineConfig, oracle: Oracle, pruned: PruneResult) -> dict[str, Any]:
    """The bundle manifest's ``deadline`` (docs/bundle-format.md)."""
    facts = oracle.facts()
    report = pruned.report or {}
    return {"budget_ms": dl.budget_ms, "quantile": "p95", "device": facts.get("device"),
            "cpu": facts.get("cpu"), "runtime": facts.get("runtime"),
            "runtime_version": facts.get("runtime_version"), "precision": dl.precision,
            "threads": dl.threads, "measured_ms": report.get("final_ms"),
            "estimated_ms": report.get("final_est_ms")}
