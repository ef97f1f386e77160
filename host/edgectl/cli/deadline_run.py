"""`edgectl build --target-latency-ms`: plan or run the search, then print the build's
table and the front (also ``OUT/front.json`` and ``OUT/front.png``)."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click

from edgectl.cli.options import echo_json


def run_deadline_build(cfg: Any, o: dict[str, Any], as_json: bool) -> None:
    from edge_common.fileio import write_json_atomic
    from edgectl.cli.deadline_opts import thread_list
    from edgectl.fleet.ansible import profile_runner
    from edgectl.pipeline import netadapt
    from edgectl.pipeline.build import format_table, run_build
    from edgectl.pipeline.deadline import (
        DeadlineConfig,
        choose_target,
        make_oracle,
        manifest_section,
        plan_summary,
        search_stage,
    )
    from edgectl.pipeline.front import format_front, front_rows, plot_front

    budget = float(o["target_latency_ms"])
    plan = netadapt.Plan(budget_ms=budget, max_steps=o["search_steps"],
                         round_to=cfg.round_to or 1)
    threads = thread_list(o.get("target_threads"), cfg.threads)
    kinds = target_kinds(o["runtime"], o["precision"], cfg.formats, cfg.quantize)
    dl = DeadlineConfig(budget_ms=budget, target=o["target_device"], threads=threads[0],
                        runtime=kinds[0][0], precision=kinds[0][1],
                        max_accuracy_drop=o["accuracy_drop"], short_images=o["short_images"],
                        plan=plan)
    dl.validate()
    cfg.validate()
    from tqdm.auto import tqdm

    # through tqdm.write: lines print above the search's bar instead of through it
    echo = (lambda m: None) if as_json else (lambda m: tqdm.write(m, file=sys.stderr))
    dense = _architecture(cfg)
    runner = profile_runner(dl.target, o["inventory"], echo)  # how the search times on it
    choose = len(kinds) * len(threads) > 1
    if o["dry_run"]:
        info = plan_summary(dl, make_oracle(dl, cfg.data.img_size, runner, echo).bind(dense),
                            cfg)
        if choose:
            info["choice_measurements"] = 3 * len(kinds) * len(threads)
            info["text"] = (f"first: the dense model timed in {len(kinds) * len(threads)} "
                            f"runtime × precision × threads combinations (3 trips) on "
                            f"{dl.target}; the search runs in the fastest (the plan below is "
                            f"for {dl.runtime} {dl.precision} ×{dl.threads})\n" + info["text"])
        if as_json:
            echo_json(info)
        else:
            click.echo(info["text"])
        return
    if choose:
        echo(f"choosing the runtime: the dense model on {dl.target} in "
             f"{len(kinds) * len(threads)} combinations, median of 3")
        choice = choose_target(dense, cfg.data.img_size, runner, kinds, threads, echo=echo)
        dl.runtime, dl.precision, dl.threads = (choice["runtime"], choice["precision"],
                                                choice["threads"])
        dl.extra["choice"] = choice["rows"]
    oracle = make_oracle(dl, cfg.data.img_size, runner, echo=echo)
    oracle.bind(dense)
    est = plan_summary(dl, oracle, cfg)["expected_steps"]
    bar = tqdm(total=est or None, desc="search", unit="step", file=sys.stderr,
               disable=not cfg.progress or as_json)

    def on_step(step: netadapt.Step) -> None:
        if bar.total is not None and bar.n + 1 > bar.total:
            bar.total = bar.n + 1
        bar.update(1)
        bar.set_postfix_str(f"best {step.accuracy:.2%} at {step.measured_ms:.3f} ms "
                            f"(budget {budget:g})")

    searched = search_stage(dl, oracle, on_step)

    def stage(*args: Any) -> Any:
        try:
            return searched(*args)
        finally:
            bar.close()     # the build's own steps print after the search

    try:
        with contextlib.redirect_stdout(sys.stderr):
            res = run_build(cfg, echo=echo, prune=stage,
                            prune_title=f"search: p95 ≤ {budget:g} ms on {dl.target} "
                                        f"({dl.runtime} {dl.precision}, {dl.threads} thread(s))",
                            deadline=lambda p: manifest_section(dl, oracle, p))
    finally:
        bar.close()
    summary = res.to_dict()
    rows = front_rows(summary, dl.target == "local")
    write_json_atomic(cfg.out / "front.json", rows)
    png = plot_front(rows, budget, cfg.out / "front.png")
    if as_json:
        echo_json({**summary, "front": rows, "front_png": str(png)})
        return
    click.echo(format_table(summary))
    click.echo("")
    click.echo(format_front(rows, budget))
    click.echo(f"front: {cfg.out / 'front.json'}, {png}")
    click.echo(f"bundle: {summary['bundle']}  ({summary['bundle_tar']})")


def target_kinds(runtime: str, precision: str, formats: Any, quantize: str
                 ) -> list[tuple[str, str]]:
    """The (runtime, precision) pairs the search may run in: those asked for (``auto``:
    any) that the build will also put in the bundle (``--formats``, ``--quantize``), so the
    bundle always holds the artifact the budget was measured with; none → usage error."""
    from edgectl.pipeline.deadline import KINDS

    built = {(f, p) for f in formats for p in ("fp32", *(("int8",) if quantize == "int8"
                                                          else ()))}
    kinds = [(r, p) for r, p in KINDS if runtime in (r, "auto") and precision in (p, "auto")
             and (r, p) in built]
    if not kinds:
        raise click.UsageError(
            f"--runtime {runtime} --precision {precision}: the bundle would not hold that "
            f"artifact (--formats {','.join(formats)}, --quantize {quantize}); add it, or "
            "choose what the build makes")
    return kinds


def _architecture(cfg: Any) -> Any:
    """The model the search will start from, for the table's shapes (weights do not
    matter): the --from checkpoint, else the stock MobileNetV2 the baseline will be."""
    if cfg.from_model is not None:
        from edgectl.pipeline.checkpoint import load_checkpoint

        return load_checkpoint(cfg.from_model)[0]
    from edgectl.pipeline.data import load_datasets
    from edgectl.pipeline.model import build_model

    labels = load_datasets(cfg.data, augment=False).labels
    return build_model(len(labels), width_mult=cfg.width_mult).eval()
