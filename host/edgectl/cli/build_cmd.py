"""`edgectl build`: the whole pipeline, ending in a bundle and a summary table."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click

from edgectl.cli.options import (
    data_config_from,
    data_options,
    device_option,
    echo_json,
    json_option,
    pruning_options,
    start_compute,
    threads_option,
)


def _formats(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    fmts = [f.strip().lower() for f in value.split(",") if f.strip()]
    bad = [f for f in fmts if f not in ("onnx", "tflite")]
    if bad or not fmts:
        raise click.BadParameter(f"expected onnx, tflite or onnx,tflite, got {value!r}")
    return tuple(dict.fromkeys(fmts))


@click.command()
@data_options
@pruning_options(with_none=True)
@click.option("--quantize", type=click.Choice(["int8", "none"]), default="int8",
              show_default=True, help="Add INT8 (post-training static) twins of each format.")
@click.option("--formats", default="onnx,tflite", show_default=True, callback=_formats,
              help="Artifact formats, comma-separated.")
@click.option("--epochs", type=click.IntRange(0), default=None,
              help="Baseline training epochs (default: the trainer's, 8).")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--calib-size", type=click.IntRange(1), default=300, show_default=True,
              help="Training images used to calibrate INT8.")
@click.option("--min-accuracy", type=click.FloatRange(0.0, 1.0), default=None,
              help="Accuracy gate (0-1) for the model and every artifact "
                   "[default: the larger of baseline accuracy - 0.02 and the test set's "
                   "majority-class share + 0.05].")
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
@json_option
def build(as_json: bool, no_cache: bool, **kw: Any) -> None:
    """Train (or reuse) the baseline, prune, fine-tune, export, quantize, evaluate every
    artifact and write a verified bundle, then print baseline vs result.

    \b
    Example:
      edgectl build --prune unstructured --sparsity 0.5 --out runs/demo
    """
    from edgectl.pipeline.build import BuildConfig, format_table, run_build

    start_compute(kw.pop("device"))  # training and fine-tuning read it (pipeline.compute)
    data = data_config_from(kw)
    kw["prune"] = kw.pop("method")
    cfg = BuildConfig(data=data, cache=not no_cache, **kw)
    # Progress (stage lines, bars, libraries' chatter) goes to stderr; stdout carries
    # only the result, so `--json` output stays parseable.
    with contextlib.redirect_stdout(sys.stderr):
        summary = run_build(cfg)
    if as_json:
        echo_json(summary)
        return
    click.echo(format_table(summary))
    click.echo(f"bundle: {summary['bundle']}  ({summary['bundle_tar']})")
