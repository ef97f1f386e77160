"""A latency-budget build from end to end (``edgectl build --target-latency-ms``, and
``benchmarks/bench_deadline.py``): the runtime chosen on the target, the plan
(``--dry-run``), the search as :func:`build.run_build`'s prune stage, and the front.

The command parses and prints; the search's pieces are in :mod:`edgectl.pipeline.deadline`.
How latency is measured on the target is the caller's ``runner``
(``fleet.ansible.profile_runner``): the pipeline never reaches up into fleet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgectl.pipeline import netadapt
from edgectl.pipeline.build import BuildConfig, BuildResult, run_build
from edgectl.pipeline.deadline import (
    DeadlineConfig,
    Oracle,
    choose_target,
    make_oracle,
    manifest_section,
    plan_summary,
    search_stage,
)

if TYPE_CHECKING:
    from torch import nn

    from edgectl.pipeline.data import Datasets
    from edgectl.pipeline.latency_table import Runner

Echo = Callable[[str], None]


class SearchProgress(Protocol):
    """Where the search reports its steps (the command's progress bar)."""

    def start(self, expected_steps: int | None) -> None: ...
    def step(self, step: netadapt.Step) -> None: ...
    def close(self) -> None: ...      # the search is over: the build's own lines follow


@dataclass
class DeadlineBuild:
    """A finished latency-budget build: the build, its front (``OUT/front.json``) and
    the front's plot (``OUT/front.png``)."""

    result: BuildResult
    front: list[dict[str, Any]]
    front_png: Path


def deadline_config(budget_ms: float, target: str, kinds: list[tuple[str, str]],
                    threads: list[int], *, accuracy_drop: float, short_images: int,
                    search_steps: int, round_to: int) -> DeadlineConfig:
    """The search's settings, checked; runtime, precision and threads are the first
    candidates (:func:`choose_runtime` picks among several)."""
    plan = netadapt.Plan(budget_ms=budget_ms, max_steps=search_steps, round_to=round_to or 1)
    dl = DeadlineConfig(budget_ms=budget_ms, target=target, threads=threads[0],
                        runtime=kinds[0][0], precision=kinds[0][1],
                        max_accuracy_drop=accuracy_drop, short_images=short_images, plan=plan)
    dl.validate()
    return dl


def architecture(cfg: BuildConfig, datasets: Datasets | None = None) -> nn.Module:
    """The model the search will start from, for the table's shapes (weights do not
    matter): the --from checkpoint, else the stock MobileNetV2 the baseline will be (its
    class count from ``datasets``, loaded here when not given)."""
    if cfg.from_model is not None:
        from edgectl.pipeline.checkpoint import load_checkpoint

        return load_checkpoint(cfg.from_model)[0]
    from edgectl.pipeline.data import load_datasets
    from edgectl.pipeline.model import build_model

    labels = (datasets or load_datasets(cfg.data, augment=False)).labels
    return build_model(len(labels), width_mult=cfg.width_mult).eval()


def dry_run(cfg: BuildConfig, dl: DeadlineConfig, kinds: list[tuple[str, str]],
            threads: list[int], runner: Runner, echo: Echo) -> dict[str, Any]:
    """The plan ``--dry-run`` prints (``info["text"]``), from the cached table only."""
    dense = architecture(cfg)
    info = plan_summary(dl, make_oracle(dl, cfg.data.img_size, runner, cfg.cache_dir,
                                         echo).bind(dense), cfg)
    combos = len(kinds) * len(threads)
    if combos > 1:
        info["choice_measurements"] = 3 * combos
        info["text"] = (f"first: the dense model timed in {combos} runtime × precision × "
                        f"threads combinations (3 trips) on {dl.target}; the search runs in "
                        f"the fastest (the plan below is for {dl.runtime} {dl.precision} "
                        f"×{dl.threads})\n" + info["text"])
    return info


def search_build(cfg: BuildConfig, dl: DeadlineConfig, oracle: Oracle, *, echo: Echo,
                 progress: SearchProgress | None = None,
                 datasets: Datasets | None = None) -> BuildResult:
    """:func:`build.run_build` with the search as its prune stage against ``oracle``
    (bound by the stage to the baseline's architecture), the manifest's ``deadline``;
    ``datasets``: ``cfg.data`` already loaded (the build then loads nothing again)."""
    stage = search_stage(dl, oracle, progress.step if progress is not None else None)

    def searched(*args: Any) -> Any:
        try:
            return stage(*args)
        finally:
            if progress is not None:
                progress.close()     # the build's own steps print after the search

    try:
        return run_build(cfg, echo=echo, prune=searched,
                         prune_title=f"search: p95 ≤ {dl.budget_ms:g} ms on {dl.target} "
                                     f"({dl.runtime} {dl.precision}, {dl.threads} thread(s))",
                         deadline=lambda p: manifest_section(dl, oracle, p),
                         datasets=datasets)
    finally:
        if progress is not None:
            progress.close()


def run_deadline_build(cfg: BuildConfig, dl: DeadlineConfig, kinds: list[tuple[str, str]],
                       threads: list[int], runner: Runner, *, echo: Echo,
                       progress: SearchProgress | None = None) -> DeadlineBuild:
    """Choose the runtime (several ``kinds``/``threads``: the dense model timed on the
    target in each), search, build, and write the front (``OUT/front.json``, ``.png``)."""
    from edge_common.fileio import write_json_atomic
    from edgectl.pipeline.data import load_datasets
    from edgectl.pipeline.front import front_rows, plot_front

    cfg.validate()
    datasets = load_datasets(cfg.data)       # once: the architecture, then the whole build
    dense = architecture(cfg, datasets)
    combos = len(kinds) * len(threads)
    if combos > 1:
        echo(f"choosing the runtime: the dense model on {dl.target} in {combos} "
             "combinations, median of 3")
        choice = choose_target(dense, cfg.data.img_size, runner, kinds, threads, echo=echo)
        dl.runtime, dl.precision, dl.threads = (choice["runtime"], choice["precision"],
                                                choice["threads"])
        dl.extra["choice"] = choice["rows"]
    oracle = make_oracle(dl, cfg.data.img_size, runner, cfg.cache_dir, echo=echo)
    oracle.bind(dense)
    if progress is not None:
        progress.start(plan_summary(dl, oracle, cfg)["expected_steps"])
    res = search_build(cfg, dl, oracle, echo=echo, progress=progress, datasets=datasets)
    rows = front_rows(res.to_dict(), dl.target == "local")
    write_json_atomic(cfg.out / "front.json", rows)
    png = plot_front(rows, dl.budget_ms, cfg.out / "front.png")
    return DeadlineBuild(res, rows, png)
