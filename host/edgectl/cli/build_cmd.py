"""`edgectl build`: the whole pipeline, ending in a bundle and a summary table."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click

from edgectl.cli.deadline_opts import DEADLINE_KEYS, check_search_flags, deadline_options
from edgectl.cli.options import (
    calib_size_option,
    data_config_from,
    data_options,
    default_cache_dir,
    device_option,
    echo_json,
    formats_option,
    json_option,
    pruning_options,
    start_compute,
    threads_option,
)


@click.command()
@data_options
@pruning_options(with_none=True)
@click.option("--quantize", type=click.Choice(["int8", "none"]), default="int8",
              show_default=True, help="Add INT8 (post-training static) twins of each format.")
@formats_option()
@click.option("--epochs", type=click.IntRange(0), default=None,
              help="Baseline training epochs (default: the trainer's, 8).")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@calib_size_option
@click.option("--min-accuracy", type=click.FloatRange(0.0, 1.0), default=None,
              help="Accuracy gate (0-1) for the model and every artifact "
                   "[default: the larger of baseline accuracy - 0.02 and the test set's "
                   "majority-class share + 0.05].")
@click.option("--max-accuracy-drop", type=click.FloatRange(0.0, 100.0), default=1.0,
              show_default=True, metavar="PTS",
              help="INT8 gate: an INT8 artifact losing more than PTS points of accuracy "
                   "against its FP32 twin is marked not deployable (the board serves FP32).")
@click.option("--allow-below-min", is_flag=True,
              help="Write the bundle even below the gate, marked not deployable (experiments).")
@click.option("--from", "from_model", type=click.Path(exists=True, path_type=Path),
              help="Start from this baseline checkpoint instead of training one.")
@click.option("--weights", default="none", show_default=True,
              help="Initial weights when training: none | imagenet | PATH.")
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Ed25519 private key (edgectl keys generate) to sign the bundle.")
@click.option("--name", default=None, help="Model name in the manifest.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder (bundle/, bundle.tar, checkpoints, build.json).")
@click.option("--no-cache", is_flag=True, help="Retrain the baseline even if a cached one exists.")
@click.option("--width-mult", type=float, default=1.0, hidden=True)
@click.option("--latency-runs", type=click.IntRange(1), default=30, hidden=True)
@threads_option
@device_option
@deadline_options
@json_option
def build(as_json: bool, no_cache: bool, **kw: Any) -> None:
    """Train (or reuse) the baseline, prune, fine-tune, export, quantize, evaluate every
    artifact and write a verified bundle, then print baseline vs result.

    With --target-latency-ms the pruning is searched instead (NetAdapt over MobileNetV2's
    stages) for the most accurate model whose p95 latency measured on --target-device
    meets the budget; the bundle records it (docs/deadline.md).

    \b
    Examples:
      edgectl build --prune unstructured --sparsity 0.5 --out runs/demo
      edgectl build --target-latency-ms 2.5 --out runs/deadline
      edgectl build --target-latency-ms 8 --target-device line1-pi4 -i inv.yml --out runs/pi
      edgectl build --target-latency-ms 2.5 --out runs/deadline --dry-run
    """
    from edgectl.pipeline.build import BuildConfig, format_table, run_build

    dl_kw = {k: kw.pop(k) for k in DEADLINE_KEYS}
    kw["device"] = start_compute(kw.pop("device"))  # BuildConfig.device: training runs there
    data = data_config_from(kw)
    kw["prune"] = kw.pop("method")
    if dl_kw["target_latency_ms"] is not None:
        from edgectl.cli.deadline_run import run_deadline_build

        check_search_flags(click.get_current_context())
        kw.update(prune="structured", regime="oneshot")
        cfg = BuildConfig(data=data, cache=not no_cache, cache_dir=default_cache_dir(), **kw)
        run_deadline_build(cfg, dl_kw, as_json)
        return
    cfg = BuildConfig(data=data, cache=not no_cache, cache_dir=default_cache_dir(), **kw)
    # Progress (stage lines, bars, libraries' chatter) goes to stderr; stdout carries
    # only the result, so `--json` output stays parseable.
    with contextlib.redirect_stdout(sys.stderr):
        summary = run_build(cfg).to_dict()
    if as_json:
        echo_json(summary)
        return
    click.echo(format_table(summary))
    click.echo(f"bundle: {summary['bundle']}  ({summary['bundle_tar']})")
