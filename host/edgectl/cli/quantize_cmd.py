"""`edgectl quantize`: INT8 post-training static quantization, shown beside its FP32 twin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgectl.cli.export_cmd import default_out, load, out_option
from edgectl.cli.options import (
    calib_size_option,
    data_options,
    echo_json,
    formats_option,
    json_option,
    threads_option,
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path())
@formats_option("--format", "onnx,tflite")
@calib_size_option
@click.option("--calib-method", type=click.Choice(["minmax", "percentile", "entropy"]),
              default="minmax", show_default=True, help="ONNX Runtime calibration method.")
@click.option("--runs", type=int, default=50, show_default=True,
              help="Timed runs for latency (batch 1); 0 skips latency.")
@out_option
@data_options
@threads_option
@json_option
@click.pass_context
def quantize(ctx: click.Context, model: str, formats: tuple[str, ...], calib_size: int,
             calib_method: str, runs: int, out_dir: str | None, threads: int, as_json: bool,
             **kwargs: Any) -> None:
    """INT8-quantize the checkpoint MODEL (exports the FP32 artifacts first if needed).

    Static post-training quantization calibrated on training images: ONNX Runtime QDQ
    (per-channel int8 weights, uint8 activations) and TFLite full-integer
    (ai-edge-quantizer). Every INT8 file is checked against PyTorch and its accuracy is
    recomputed on the test set beside its FP32 twin.

    Data options default to the checkpoint's own data config (not the defaults shown).
    """
    from edgectl.pipeline import quantization as q

    fmts = list(formats)
    net, _meta, cfg = load(ctx, model, kwargs)
    out = default_out(model, out_dir)
    result = q.quantize_all(net, fmts, out, cfg, calib_size=calib_size, method=calib_method,
                            threads=threads, runs=max(0, runs))
    if as_json:
        echo_json(result)
        return
    click.echo(f"test set: {result['test_images']} images ({cfg.spec}, {cfg.img_size}px); "
               f"calibration: {result['calibration_images']} training images")
    click.echo(f"{'artifact':<20} {'size':>9} {'accuracy':>9} {'Δ vs fp32':>9} "
               f"{'top-1 agree (clear)':>20} {'p50 ms':>8} {'p95 ms':>8}")
    for r in result["artifacts"]:
        lat = r.get("latency_ms") or {}
        drop = f"{-r['accuracy_drop'] * 100:+.2f} pt" if "accuracy_drop" in r else ""
        agree = f"{r['top1_agreement']:.1%}"
        if "top1_agreement_clear" in r:  # INT8: also where PyTorch's top-1 margin is clear
            agree += f" ({r['top1_agreement_clear']:.0%} of {r['clear_n']})"
        click.echo(f"{Path(r['path']).name:<20} {r['bytes'] / 1e6:>6.2f} MB {r['accuracy']:>9.2%} "
                   f"{drop:>9} {agree:>20} "
                   f"{lat.get('p50', float('nan')):>8.3f} {lat.get('p95', float('nan')):>8.3f}")
    click.echo(f"written to {out} (latency: batch 1, {threads} thread(s))")
