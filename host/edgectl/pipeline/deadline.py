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
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from torch import nn

from edge_common.errors import ConfigError, EdgeError
from edgectl.pipeline import netadapt
from edgectl.pipeline.build_results import BaselineResult, PruneResult

if TYPE_CHECKING:
    from edgectl.pipeline.latency_table import Runner

Echo = Callable[[str], None]


class Oracle(Protocol):
    """Latency of one target (a board over SSH, or this machine) for one runtime,
    precision and thread count."""

    def bind(self, dense: nn.Module) -> Oracle: ...             # the architecture searched
    def estimate(self, keep: netadapt.Keep) -> float: ...       # ms, from the table
    def measure(self, model: nn.Module) -> float: ...           # p95 ms, end to end
    def facts(self) -> dict[str, Any]: ...                      # device, cpu, runtime, …
    def peek(self, keep: netadapt.Keep) -> float | None: ...    # cached estimate, no I/O
    def missing(self, keep: netadapt.Keep) -> int: ...          # entries not yet measured
    def prefetch(self, keeps: list[netadapt.Keep]) -> int: ...  # measure these, one trip
    def observe(self, keep: netadapt.Keep, measured_ms: float) -> None: ...  # refit to it


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
    selection_images: int | None = None   # default: a fifth of the training set, ≤ 1000
    plan: netadapt.Plan | None = None
    state: Path | None = None        # resumable search state (default: under OUT)
    # the search stops only this far under the budget: a guard band for measurement noise
    # (a step's median just under the budget missed it on re-measurement, in CI); the
    # bundle's check is against the budget itself
    guard: float = 0.03
    # proposals scored after adaptive batch norm (training.recalibrate_bn) on this many
    # training batches; 0: scored straight after the short fine-tune
    bn_batches: int = 32
    extra: dict[str, Any] = field(default_factory=dict)

    def search_plan(self) -> netadapt.Plan:
        return self.plan or netadapt.Plan(budget_ms=self.budget_ms)

    def validate(self) -> None:
        self.search_plan().validate()
        if self.runtime not in ("onnx", "tflite") or self.precision not in ("fp32", "int8"):
            raise ConfigError(f"runtime must be onnx|tflite and precision fp32|int8, got "
                              f"{self.runtime}/{self.precision}")
        if not 0.0 <= self.max_accuracy_drop <= 100.0:
            raise ConfigError(f"--accuracy-drop must be in [0, 100] points, got "
                              f"{self.max_accuracy_drop}")
        if self.short_images < 1 or (self.selection_images is not None
                                     and self.selection_images < 1):
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
        from edgectl.pipeline.prune_eval import save_and_evaluate
        from edgectl.pipeline.training import (
            accuracy,
            fine_tune,
            fine_tune_hook,
            recalibrate_bn,
        )

        trips: dict[tuple[int, ...], list[float]] = {}

        def median_trips(model: nn.Module) -> float:
            # every figure the search stops on and the bundle records: one measurement on
            # a busy board can miss by a few percent either way (seen on the test host).
            # Latency depends on the shape, not the weights: the trips of one shape are
            # pooled, so the final figure is the median of the last step's trips and its
            # own (a searched model met the budget by 3 % and missed it by 2 % on its
            # final 3 trips alone, on this 2-core machine)
            shape = tuple(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
            got = trips.setdefault(shape, [])
            got.extend(oracle.measure(model) for _ in range(3))
            return statistics.median_high(got)

        n_sel = dl.selection_images or min(1000, max(1, len(datasets.train) // 5))
        tune_set, selection = split_selection(datasets, n_sel, cfg.data.seed)
        n_tune = len(tune_set.train)
        size = datasets.input_spec.size

        def short_tune(model: nn.Module, step: int, stage_k: int) -> None:
            # a different slice of the training set for every proposal, as the paper's
            # short-term fine-tune sees a few thousand iterations of fresh batches
            k = step * (netadapt.UNITS + 1) + stage_k    # + 1: the whole-network unit
            idx = [(k * dl.short_images + j) % n_tune for j in range(dl.short_images)]
            part = dataclasses.replace(tune_set, train=Subset(tune_set.train, idx))
            fine_tune(model, part, epochs=1, batch_size=cfg.batch_size, seed=cfg.data.seed + k,
                      progress=False, eval_each_epoch=False, device=cfg.device)
            if dl.bn_batches:
                # 16 SGD steps leave a deep cut's BN statistics far from its activations:
                # its score was near chance (benchmarks/results/deadline-per-stage.md);
                # re-estimate them before scoring, as EagleEye does
                recalibrate_bn(model, tune_set.train, batches=dl.bn_batches,
                               batch_size=cfg.batch_size, seed=cfg.data.seed + k)

        oracle.bind(base.model)         # the table is of the baseline's architecture
        plan = dataclasses.replace(dl.search_plan(),
                                   budget_ms=dl.search_plan().budget_ms * (1 - dl.guard))
        state_dir = dl.state or cfg.out / "search"
        from edge_common.hashing import sha256_chunks

        # the baseline by its weights: each build's OUT holds its own checkpoint file,
        # whose bytes differ (metadata) where the model does not
        weights = sha256_chunks(t.detach().cpu().numpy().tobytes()
                                for t in base.model.state_dict().values())
        key = plan.key({"baseline": weights, "meta": base.meta.get("key"),
                        "target": [dl.target, dl.runtime, dl.precision, dl.threads],
                        "short": dl.short_images, "bn": dl.bn_batches,
                        "selection": n_sel, "seed": cfg.data.seed})
        res = netadapt.search(copy.deepcopy(base.model), base.model, size, plan,
                              estimate=oracle.estimate, measure=median_trips,
                              tune=short_tune, score=lambda m: accuracy(m.eval(), selection),
                              state_dir=state_dir, state_key=key, echo=echo, on_step=progress,
                              prefetch=oracle.prefetch, observe=oracle.observe)
        model = res.model
        if cfg.finetune_epochs:
            echo(f"  long fine-tune: {cfg.finetune_epochs} epoch(s)")
            fine_tune_hook(tune_set, cfg.finetune_epochs, batch_size=cfg.batch_size,
                           seed=cfg.data.seed, progress=cfg.progress,
                           device=cfg.device)(model, None)
        final_ms = median_trips(model)
        report = {"method": "deadline", "budget_ms": dl.budget_ms, "keep": res.keep,
                  "met": final_ms <= dl.budget_ms, "stop": res.stop,
                  "start_ms": res.start_ms, "start_est_ms": res.start_est_ms,
                  "final_ms": final_ms, "final_est_ms": oracle.estimate(tuple(res.keep)),
                  "steps": [dataclasses.asdict(s) for s in res.steps],
                  "estimation_error": netadapt.estimation_errors(res.steps),
                  "oracle": oracle.facts(), "plan": dataclasses.asdict(plan),
                  "target_choice": dl.extra.get("choice")}
        ckpt, metrics = save_and_evaluate(model, {**base.meta, "pruning": report}, datasets,
                                          cfg.out / "model" / "model.pt", threads=cfg.threads,
                                          latency_runs=cfg.latency_runs)
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
        what.append(f"--accuracy-drop {math.ceil(drop * 10) / 10:g}")
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


def plan_summary(dl: DeadlineConfig, oracle: Oracle, cfg: Any) -> dict[str, Any]:
    """What ``--dry-run`` prints: the plan and the expected number of fine-tunes and
    measurements, from the cached table only (nothing is measured or trained)."""
    plan = dl.search_plan()
    dense = (1.0,) * netadapt.UNITS
    start_est = oracle.peek(dense)
    missing = oracle.missing(dense)
    if start_est is None:
        steps, why = plan.max_steps, "at most (the table is not measured yet)"
    else:
        # the budget in the table's scale: the table's error is unknown before a run, so
        # the plan assumes estimate = measurement
        steps, why = plan.expected_steps(start_est, dl.budget_ms), "expected"
    per_step = netadapt.UNITS + plan.whole      # every unit's proposal, and the whole net's
    info = {
        "budget_ms": dl.budget_ms, "target": dl.target, "runtime": dl.runtime,
        "precision": dl.precision, "threads": dl.threads, "start_est_ms": start_est,
        "expected_steps": steps, "steps_are": why, "max_steps": plan.max_steps,
        "short_fine_tunes": steps * per_step,
        "short_images": dl.short_images,
        "long_fine_tune_epochs": cfg.finetune_epochs,
        "end_to_end_measurements": 3 * (steps + 3), "table_entries_to_measure_first": missing,
        "oracle": oracle.facts(), "out": str(cfg.out),
    }
    est = "not measured yet" if start_est is None else f"{start_est:.3f} ms (table)"
    info["text"] = "\n".join([
        f"search plan: p95 ≤ {dl.budget_ms:g} ms on {dl.target} ({dl.runtime} {dl.precision}, "
        f"{dl.threads} thread(s)), at most {dl.max_accuracy_drop:g} points below the baseline",
        f"  dense model: {est}; table entries still to measure: {missing}",
        f"  steps: {steps} {why}; each: ≤ {per_step} proposals, a short fine-tune of "
        f"{dl.short_images} images each, one end-to-end measurement",
        f"  fine-tunes: ≤ {info['short_fine_tunes']} short + 1 long ({cfg.finetune_epochs} "
        f"epoch(s)); end-to-end measurements: {3 * (steps + 3)} (medians of 3: "
        "calibration, start, every step, final)",
        f"  resumable state: {dl.state or cfg.out / 'search'}",
    ])
    return info


KINDS = (("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8"))
# a combination within this much of the fastest is as fast: prefer FP32 (no INT8 loss)
# and fewer threads (cores left to the camera and the line) among those
CHOICE_TIE = 0.05


def choose_target(dense: nn.Module, img_size: int, runner: Any,
                  kinds: list[tuple[str, str]], threads: list[int],
                  rounds: int = 3, echo: Echo = lambda _m: None) -> dict[str, Any]:
    """The runtime, precision and thread count the search runs in: the dense model timed
    end to end on the target in every combination (exported once, ``rounds`` trips, the
    median of each), the fastest kept. NetAdapt and AMC search the network for one
    runtime; here the runtime is chosen first, on the assumption that the combination
    fastest for the dense model stays fastest for its pruned versions (the same pruning
    shrinks the same convolutions in each), so the search starts from the smallest
    reduction — fewest steps, least accuracy lost. A heuristic, not a guarantee: a search
    per combination would cost that many times the fine-tunes. Within :data:`CHOICE_TIE`
    of the fastest, FP32 (no INT8 loss) and fewer threads win. A combination the target
    cannot run is listed with its error, never chosen; none runnable → :class:`EdgeError`.
    """
    from edgectl.pipeline import latency_table as lt

    times, _report = lt.measure_combos(dense, img_size, kinds, runner, threads, rounds)
    rows: list[dict[str, Any]] = []
    for rt, prec in kinds:
        for t in threads:
            got = times[(rt, prec, int(t))]
            ms = None if isinstance(got, str) else statistics.median_high(got)
            rows.append({"runtime": rt, "precision": prec, "threads": int(t),
                         "dense_ms": ms, "error": got if isinstance(got, str) else None})
    ok = [r for r in rows if r["dense_ms"] is not None]
    if not ok:
        raise EdgeError("the target runs none of "
                        + ", ".join(f"{r['runtime']} {r['precision']} ×{r['threads']}"
                                    for r in rows)
                        + f": {rows[0]['error']}")
    fastest = min(r["dense_ms"] for r in ok)
    near = [r for r in ok if r["dense_ms"] <= fastest * (1 + CHOICE_TIE)]
    best = min(near, key=lambda r: (r["precision"] != "fp32", r["threads"], r["dense_ms"]))
    for r in rows:
        r["chosen"] = r is best
        echo(f"  dense {r['runtime']:<6} {r['precision']} ×{r['threads']}: "
             + (f"{r['dense_ms']:.3f} ms p95" if r["dense_ms"] is not None
                else f"cannot run here ({r['error']})") + ("  ← search here" if r is best
                                                            else ""))
    return {"runtime": best["runtime"], "precision": best["precision"],
            "threads": best["threads"], "rows": rows}


class TableOracle:
    """The :class:`Oracle` of one target: its latency table (``pipeline.latency_table``)
    for estimates, the agent's bench there for end-to-end measurements, both through
    ``runner`` (``fleet.ansible.profile_runner``, passed in by the caller). ``bind(dense)``
    before use: the table is of that architecture; its overhead is calibrated from one
    end-to-end measurement of ``dense`` (weights do not change latency)."""

    def __init__(self, dl: DeadlineConfig, img_size: int, runner: Runner, cache: Path,
                 echo: Echo = lambda _m: None) -> None:
        self.dl, self.img_size, self.echo = dl, int(img_size), echo
        self.cache = cache           # latency tables under cache/latency-tables
        self.runner = runner
        self.table: Any = None
        self.measurements = 0

    def bind(self, dense: nn.Module) -> TableOracle:
        from edgectl.pipeline import latency_table as lt

        path = lt.table_path(self.cache, self.dl.target, self.dl.runtime, self.dl.precision,
                             self.dl.threads, self.img_size, dense)
        self.table = lt.LatencyTable(path, dense, self.img_size, self.dl.runtime,
                                     self.dl.precision, self.dl.threads, self.runner,
                                     round_to=(self.dl.search_plan().round_to or None),
                                     echo=self.echo)
        self._dense = dense
        return self

    def _bound(self) -> Any:
        if self.table is None:
            raise EdgeError("latency oracle used before bind(dense)")
        return self.table

    def estimate(self, keep: netadapt.Keep) -> float:
        table = self._bound()
        if table.doc.get("overhead_ms") is None:
            self.calibrate()
        return float(table.estimate(keep))

    def calibrate(self, n: int = 3) -> float:
        """The table's overhead from the median of ``n`` end-to-end measurements of the
        dense model (one can be a cold start or a busy moment; every estimate rests on it)."""
        return float(self._bound().calibrate(
            statistics.median_high(self.measure(self._dense) for _ in range(n))))

    def measure(self, model: nn.Module) -> float:
        from edgectl.pipeline import latency_table as lt

        ms, report = lt.measure_model(model, self.img_size, self.dl.runtime, self.runner,
                                      self.dl.threads, self.dl.precision)
        self._bound()._check_facts(report)
        self.measurements += 1
        return ms

    def facts(self) -> dict[str, Any]:
        facts = self.table.facts() if self.table is not None else {}
        return {"device": self.dl.target, "runtime": self.dl.runtime,
                "precision": self.dl.precision, "threads": self.dl.threads,
                **{k: v for k, v in facts.items() if k != "device"},
                "hostname": facts.get("device")}

    def peek(self, keep: netadapt.Keep) -> float | None:
        return self._bound().peek(keep)

    def prefetch(self, keeps: list[netadapt.Keep]) -> int:
        """Measure the table entries of ``keeps`` not yet in it, in one trip."""
        return int(self._bound().ensure(keeps))

    def missing(self, keep: netadapt.Keep) -> int:
        return int(self._bound().missing(keep))

    def observe(self, keep: netadapt.Keep, measured_ms: float) -> None:
        """An end-to-end measurement: the table refits to it (``LatencyTable.observe``)."""
        self._bound().observe(keep, measured_ms)


def make_oracle(dl: DeadlineConfig, img_size: int, runner: Runner, cache: Path,
                echo: Echo = lambda _m: None) -> TableOracle:
    return TableOracle(dl, img_size, runner, cache, echo)
