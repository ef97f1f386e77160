"""`edgectl build --target-latency-ms`: parse the search's options, plan or run it
(``pipeline.deadline_build``), and print the build's table and the front (also
``OUT/front.json`` and ``OUT/front.png``)."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any

import click

from edgectl.cli.options import echo_json

if TYPE_CHECKING:
    from edgectl.pipeline import netadapt
    from edgectl.pipeline.build import BuildConfig


def run_deadline_build(cfg: BuildConfig, o: dict[str, Any], as_json: bool) -> None:
    from tqdm.auto import tqdm

    from edgectl.cli.deadline_opts import thread_list
    from edgectl.fleet.ansible import profile_runner
    from edgectl.pipeline import deadline_build as db
    from edgectl.pipeline.build import format_table
    from edgectl.pipeline.front import format_front

    budget = float(o["target_latency_ms"])
    threads = thread_list(o.get("target_threads"), cfg.threads)
    kinds = target_kinds(o["runtime"], o["precision"], cfg.formats, cfg.quantize)
    dl = db.deadline_config(budget, o["target_device"], kinds, threads,
                            accuracy_drop=o["accuracy_drop"], short_images=o["short_images"],
                            search_steps=o["search_steps"], round_to=cfg.round_to)
    cfg.validate()
    # through tqdm.write: lines print above the search's bar instead of through it
    echo = (lambda m: None) if as_json else (lambda m: tqdm.write(m, file=sys.stderr))
    runner = profile_runner(dl.target, o["inventory"], echo)  # how the search times on it
    if o["dry_run"]:
        info = db.dry_run(cfg, dl, kinds, threads, runner, echo)
        if as_json:
            echo_json(info)
        else:
            click.echo(info["text"])
        return
    with contextlib.redirect_stdout(sys.stderr):
        done = db.run_deadline_build(cfg, dl, kinds, threads, runner, echo=echo,
                                     progress=_Bar(budget, not cfg.progress or as_json))
    summary = done.result.to_dict()
    if as_json:
        echo_json({**summary, "front": done.front, "front_png": str(done.front_png)})
        return
    click.echo(format_table(summary))
    click.echo("")
    click.echo(format_front(done.front, budget))
    click.echo(f"front: {cfg.out / 'front.json'}, {done.front_png}")
    click.echo(f"bundle: {summary['bundle']}  ({summary['bundle_tar']})")


class _Bar:
    """The search's progress bar on stderr (``pipeline.deadline_build.SearchProgress``)."""

    def __init__(self, budget: float, disable: bool) -> None:
        self.budget, self.disable = budget, disable
        self.bar: Any = None

    def start(self, expected_steps: int | None) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=expected_steps or None, desc="search", unit="step",
                        file=sys.stderr, disable=self.disable)

    def step(self, step: netadapt.Step) -> None:
        bar = self.bar
        if bar.total is not None and bar.n + 1 > bar.total:
            bar.total = bar.n + 1
        bar.update(1)
        bar.set_postfix_str(f"best {step.accuracy:.2%} at {step.measured_ms:.3f} ms "
                            f"(budget {self.budget:g})")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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
