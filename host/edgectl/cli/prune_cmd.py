"""`edgectl prune`: prune a checkpoint, fine-tune, evaluate before/after, measure the speed-up."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click

from edgectl.cli.options import (
    check_labels,
    checkpoint_data_config,
    data_options,
    device_option,
    echo_json,
    json_option,
    pruning_options,
    start_compute,
    threads_option,
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path())
@pruning_options()
@click.option("--lr", type=float, default=None, help="Fine-tune learning rate (default 2e-4).")
@click.option("--global-channels/--uniform-channels", default=False, show_default=True,
              help="Structured: rank channels across layers, or prune each layer alike.")
@click.option("--exclude-classifier/--include-classifier", default=True, show_default=True,
              help="Unstructured: leave the final Linear dense (structured never shrinks it).")
@data_options
@threads_option
@click.option("--latency-runs", type=click.IntRange(min=1), default=50, show_default=True,
              help="Timed runs per latency measurement.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run folder for the pruned checkpoint and prune.json.")
@device_option
@json_option
@click.pass_context
def prune(
    ctx: click.Context,
    model: str,
    method: str,
    regime: str,
    sparsity: float,
    step: float,
    finetune_epochs: int,
    lr: float | None,
    round_to: int,
    global_channels: bool,
    exclude_classifier: bool,
    threads: int,
    latency_runs: int,
    out: str,
    as_json: bool,
    device: str,
    **kwargs: Any,
) -> None:
    """Prune the checkpoint MODEL to --sparsity, fine-tune, and compare before/after.

    Prints the eval metrics before and after, every step (target, reached sparsity,
    accuracy after fine-tune) and the measured latency of the dense and pruned models
    (ONNX Runtime FP32 and PyTorch eager, batch 1). Data options default to the
    checkpoint's own data config.

    \b
    Examples:
      edgectl prune runs/baseline --method structured --sparsity 0.5 --out runs/s50
      edgectl prune runs/baseline --method unstructured --regime iterative \\
          --sparsity 0.7 --step 0.1 --finetune-epochs 1 --out runs/u70 --json
    """
    from edgectl.pipeline import pruning
    from edgectl.pipeline.checkpoint import load_checkpoint, resolve
    from edgectl.pipeline.data import load_datasets
    from edgectl.pipeline.evaluation import evaluate
    from edgectl.pipeline.prune_eval import PruneSpec, prune_and_evaluate
    from edgectl.pipeline.training import fine_tune_hook

    pruning.check_request(method, regime, sparsity, step)  # before any loading
    start_compute(device)  # fine-tuning runs there (fine_tune_hook's device)
    net, meta = load_checkpoint(model)
    orig_params, _ = pruning.lineage(meta, net)
    pruning.check_start(net, method, sparsity, orig_params, exclude_classifier)
    cfg = checkpoint_data_config(ctx, meta, kwargs)
    ds = load_datasets(cfg, augment=True)
    check_labels(model, meta, cfg, ds.labels)
    parent = resolve(model)
    before = evaluate(net, ds, threads=threads, checkpoint_path=parent,
                      latency=True, latency_runs=latency_runs)
    spec = PruneSpec(method, regime, sparsity, step, round_to or None, exclude_classifier,
                     global_channels)
    # Progress (tqdm bars, and fine-tune's per-epoch lines) goes to stderr: stdout is the result.
    with contextlib.redirect_stdout(sys.stderr):
        res = prune_and_evaluate(
            net, meta, ds, spec, out=Path(out), meta={"data": cfg.to_dict()},
            record={"finetune_epochs": finetune_epochs, "parent": str(parent)},
            fine_tune=fine_tune_hook(ds, finetune_epochs, lr=lr, seed=cfg.seed, measure=True,
                                     device=device),
            threads=threads, latency_runs=latency_runs, progress=True)
    report = res.report or {}
    result = {
        "checkpoint": str(res.checkpoint),
        "before": before,
        "after": res.metrics,
        "steps": report["steps"],
        "pruning": {k: v for k, v in report.items() if k != "steps"},
        "speed": res.speed,
    }
    from edge_common.fileio import write_json_atomic

    write_json_atomic(Path(out) / "prune.json", result)
    if as_json:
        echo_json(result)
    else:
        click.echo(format_summary(result))


def format_summary(result: dict[str, Any]) -> str:
    """Before/after table, steps and the speed verdict, for people."""
    b, a, p, sp = result["before"], result["after"], result["pruning"], result["speed"]
    what = ("of prunable weights zero" if p["method"] == "unstructured"
            else "of parameters removed")
    lines = [
        f"{p['method']} {p['regime']}: target {p['target']:.2f}, reached {p['actual']:.4f} "
        f"({what}); channels removed {p['channel_ratio']:.1%}, MACs −{p['macs_reduction']:.1%}",
        "",
        f"{'':8} {'accuracy':>9} {'params':>10} {'nonzero':>10} {'MMACs':>8} {'size KB':>9}",
    ]
    for name, ev in (("before", b), ("after", a)):
        lines.append(
            f"{name:8} {ev['accuracy']:>9.2%} {ev['params']:>10,} {ev['nonzero']:>10,} "
            f"{ev.get('macs', 0) / 1e6:>8.1f} {ev.get('size_bytes', 0) / 1024:>9.0f}"
        )
    lines += ["", "steps:"]
    for i, s in enumerate(result["steps"], 1):
        acc = "—" if s["accuracy"] is None else f"{s['accuracy']:.2%}"
        lines.append(f"  {i:2}. target {s['target']:.3f}  reached {s['actual']:.4f}  acc {acc}")
    lines += ["", f"latency (batch 1, {sp['threads']} thread(s), p50):"]
    for rt in ("onnxruntime_fp32", "pytorch_eager"):
        r = sp[rt]
        lines.append(f"  {rt:17} dense {r['dense_ms']:7.3f} ms  pruned {r['pruned_ms']:7.3f} ms  "
                     f"×{r['ratio']:.2f}")
    sz = sp["size"]
    lines.append(f"  ONNX gzip size: dense {sz['dense']['onnx_gzip_bytes'] / 1024:.0f} KB, "
                 f"pruned {sz['pruned']['onnx_gzip_bytes'] / 1024:.0f} KB")
    lines += [f"  {sp['note']}", "", f"saved {result['checkpoint']}"]
    return "\n".join(lines)
