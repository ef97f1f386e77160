"""`edgectl eval`: accuracy, per-class accuracy, confusion, size, sparsity, MACs, latency."""

from __future__ import annotations

from typing import Any

import click

from edgectl.cli.options import (
    check_labels,
    checkpoint_data_config,
    data_options,
    echo_json,
    json_option,
    threads_option,
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path())
@data_options
@threads_option
@click.option(
    "--runs", type=int, default=50, show_default=True, help="Timed runs for latency (batch 1)."
)
@click.option("--no-latency", is_flag=True, help="Skip the latency measurement.")
@json_option
@click.pass_context
def eval_(
    ctx: click.Context,
    model: str,
    threads: int,
    runs: int,
    no_latency: bool,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Evaluate the checkpoint MODEL (a model.pt or its run folder) on its test set.

    Data options default to the checkpoint's own data config; any given one overrides it
    (e.g. --test-size 200). Latency is PyTorch on this CPU with --threads threads,
    batch 1 and per image in a batch of 32.

    \b
    Examples:
      edgectl eval runs/baseline
      edgectl eval runs/baseline --threads 2 --json
      edgectl eval runs/pruned/model.pt --data folder:~/parts --img-size 64
    """
    from edgectl.pipeline.checkpoint import load_checkpoint, resolve
    from edgectl.pipeline.data import load_datasets
    from edgectl.pipeline.evaluation import evaluate, format_report

    net, meta = load_checkpoint(model)
    cfg = checkpoint_data_config(ctx, meta, kwargs)
    ds = load_datasets(cfg, augment=False)
    check_labels(model, meta, cfg, ds.labels)
    path = resolve(model)
    result = evaluate(
        net, ds, threads=threads, checkpoint_path=path, latency_runs=runs, latency=not no_latency
    )
    if as_json:
        echo_json({"checkpoint": str(path), "data": cfg.to_dict(), **result})
        return
    click.echo(format_report(result, title=f"{path}  —  {ds.description}"))
