"""`edgectl train`: train the MobileNetV2 baseline and write a checkpoint."""

from __future__ import annotations

from typing import Any

import click

from edgectl.cli.options import (
    data_config_from,
    data_options,
    device_option,
    echo_json,
    json_option,
    start_compute,
)
from edgectl.pipeline.training import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LR


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@data_options
@click.option(
    "--epochs",
    type=int,
    default=DEFAULT_EPOCHS,
    show_default=True,
    help="Passes over the training set.",
)
@click.option("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, show_default=True)
@click.option(
    "--lr",
    type=float,
    default=DEFAULT_LR,
    show_default=True,
    help="Adam peak learning rate (one-cycle: warm-up, then cosine decay).",
)
@click.option(
    "--weights",
    default="none",
    show_default=True,
    metavar="none|imagenet|PATH",
    help="Initial weights: random, torchvision ImageNet weights (local cache) or a state_dict.",
)
@click.option(
    "--width-mult", type=float, default=1.0, show_default=True, help="MobileNetV2 width multiplier."
)
@click.option(
    "--train-threads",
    type=int,
    default=None,
    metavar="N",
    help="CPU threads for training (default: all cores).",
)
@click.option(
    "--out",
    default="runs/baseline",
    show_default=True,
    type=click.Path(),
    help="Run folder: OUT/model.pt and OUT/model.json.",
)
@device_option
@json_option
def train(
    epochs: int,
    batch_size: int,
    lr: float,
    weights: str,
    width_mult: float,
    train_threads: int | None,
    out: str,
    as_json: bool,
    device: str,
    **kwargs: Any,
) -> None:
    """Train MobileNetV2 on a dataset and save a checkpoint with its metadata.

    \b
    Examples:
      edgectl train                                  # synthetic set, defaults (a few minutes)
      edgectl train --epochs 2 --train-size 600 --out runs/quick
      edgectl train --data cifar10:~/data/cifar --img-size 32 --weights imagenet
    """
    from edgectl.pipeline.baseline import train_baseline

    if epochs <= 0 or batch_size <= 0 or lr <= 0 or width_mult <= 0:
        raise click.BadParameter("--epochs, --batch-size, --lr and --width-mult must be positive")
    cfg = data_config_from(kwargs)
    start_compute(device)
    result = train_baseline(
        cfg,
        out,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weights=weights,
        width_mult=width_mult,
        threads=train_threads,
        progress=not as_json,
        device=device,
    )
    if as_json:
        echo_json(result)
        return
    m = result["metrics"]
    click.echo(f"checkpoint   {result['checkpoint']}")
    click.echo(f"data         {result['description']}")
    click.echo(f"accuracy     {m['accuracy']:.2%} on {m['n']} test images")
    click.echo(f"params       {m['params']:,}   MACs {m['macs'] / 1e6:.1f} M")
    click.echo(
        f"training     {result['seconds']:.0f} s, {result['images_per_s']:.0f} images/s "
        f"({result['threads']} threads)"
    )
