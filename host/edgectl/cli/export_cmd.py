"""`edgectl export`: FP32 ONNX / TFLite artifacts, each checked against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgectl.cli.options import (
    data_options,
    echo_json,
    formats_option,
    json_option,
    threads_option,
)


def out_option(f: Any) -> Any:
    return click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
                        help="Output folder (default: the checkpoint's folder).")(f)


def load(ctx: click.Context, model_path: str, kwargs: dict[str, Any]) -> tuple[Any, dict, Any]:
    """Checkpoint, its meta and the data config (its own unless data options say otherwise)."""
    from edgectl.cli.options import checkpoint_data_config
    from edgectl.pipeline.checkpoint import load_checkpoint

    model, meta = load_checkpoint(model_path)
    return model, meta, checkpoint_data_config(ctx, meta, kwargs)


def default_out(model_path: str, out_dir: str | None) -> Path:
    from edgectl.pipeline.checkpoint import resolve

    return Path(out_dir) if out_dir else resolve(model_path).parent


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path())
@formats_option("--format", "onnx,tflite")
@out_option
@data_options
@threads_option
@json_option
@click.pass_context
def export(ctx: click.Context, model: str, formats: tuple[str, ...], out_dir: str | None,
           threads: int, as_json: bool, **kwargs: Any) -> None:
    """Export the checkpoint MODEL to model.fp32.onnx / model.fp32.tflite.

    Each file is run in its own runtime (ONNX Runtime, LiteRT) on the test set and compared
    with PyTorch: max abs diff, top-1 agreement, accuracy recomputed from the artifact.
    A file that does not match is deleted and the command fails.

    Data options default to the checkpoint's own data config (not the defaults shown).
    """
    from edgectl.pipeline import export as ex

    fmts = list(formats)
    net, _meta, cfg = load(ctx, model, kwargs)
    out = default_out(model, out_dir)
    result = ex.export_all(net, fmts, out, cfg, threads=threads)
    if as_json:
        echo_json(result)
        return
    click.echo(f"test set: {result['test_images']} images ({cfg.spec}, {cfg.img_size}px)")
    click.echo(f"{'artifact':<20} {'size':>9} {'max|Δ|':>9} {'top-1 agree':>11} "
               f"{'accuracy':>9} {'pytorch':>8}")
    for r in result["artifacts"]:
        click.echo(f"{Path(r['path']).name:<20} {_mb(r['bytes']):>9} {r['max_abs_diff']:>9.2e} "
                   f"{r['top1_agreement']:>11.2%} {r['accuracy']:>9.2%} "
                   f"{r['reference_accuracy']:>8.2%}")
    click.echo(f"parity OK; written to {out}")
