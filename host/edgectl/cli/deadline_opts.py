"""The options of `edgectl build --target-latency-ms` (declared here so build_cmd stays
one screen): the budget, where it is measured, and what the search may spend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

DEADLINE_KEYS = ("target_latency_ms", "target_device", "inventory", "runtime", "precision",
                 "target_threads", "accuracy_drop", "search_steps", "short_images", "dry_run")

# --prune and friends choose the pruning by hand; the search chooses it itself.
_HAND_PICKED = ("method", "sparsity", "regime", "step")


def deadline_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--target-latency-ms", type=click.FloatRange(min=0.0, min_open=True),
                     default=None, metavar="MS",
                     help="Search for the most accurate model whose p95 latency measured on "
                          "--target-device meets MS (docs/deadline.md)."),
        click.option("--target-device", default="local", show_default=True,
                     metavar="NAME|local",
                     help="Where latency is measured for --target-latency-ms: an inventory "
                          "host (over SSH, the agent's own bench) or this machine. (--device "
                          "is where training runs.)"),
        click.option("--inventory", "-i", type=click.Path(path_type=Path), default=None,
                     help="Ansible inventory for --target-device (default: "
                          "$EDGECTL_INVENTORY or ansible/inventory.yml)."),
        click.option("--runtime", type=click.Choice(["onnx", "tflite", "auto"]),
                     default="onnx", show_default=True,
                     help="Runtime the budget is measured in; auto: the one where the dense "
                          "model is fastest on the target (measured there first)."),
        click.option("--precision", type=click.Choice(["fp32", "int8", "auto"]),
                     default="fp32", show_default=True,
                     help="Precision the budget is measured in; auto: as --runtime auto."),
        click.option("--target-threads", default=None, metavar="LIST",
                     help="Thread counts to try on the target, e.g. 1,2,4 (the fastest "
                          "dense model wins, as --runtime auto); default: --threads."),
        click.option("--accuracy-drop", type=click.FloatRange(0.0, 100.0), default=1.0,
                     show_default=True, metavar="PTS",
                     help="Most test-accuracy points the searched model may lose against "
                          "the baseline."),
        click.option("--search-steps", type=click.IntRange(min=1), default=40,
                     show_default=True, help="Most NetAdapt steps."),
        click.option("--short-images", type=click.IntRange(min=1), default=1024,
                     show_default=True,
                     help="Training images each proposal's short fine-tune sees."),
        click.option("--dry-run", is_flag=True,
                     help="Print the search plan (steps, fine-tunes, measurements) and stop."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def thread_list(text: str | None, default: int) -> list[int]:
    """``--target-threads 1,2,4`` as a list; a bad entry is a usage error naming it."""
    if text is None:
        return [int(default)]
    out = []
    for part in text.split(","):
        try:
            n = int(part.strip())
        except ValueError:
            n = 0
        if n < 1:
            raise click.BadParameter(f"{part.strip()!r} is not a thread count (a positive "
                                     "integer)", param_hint="--target-threads")
        out.append(n)
    return sorted(set(out))


def check_search_flags(ctx: click.Context) -> None:
    """--target-latency-ms with a hand-picked --prune/--sparsity/--regime/--step is a usage
    error naming them (the search picks the pruning)."""
    given = [name for name in _HAND_PICKED
             if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)]
    if given:
        flags = ", ".join("--" + ("prune" if n == "method" else n) for n in given)
        raise click.UsageError(f"--target-latency-ms searches the pruning itself; drop {flags}")
