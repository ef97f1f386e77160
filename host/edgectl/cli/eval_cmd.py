"""`edgectl eval`: accuracy, per-class accuracy, confusion, size, sparsity, MACs, latency."""

from __future__ import annotations

from typing import Any

import click

from edgectl.cli.options import data_options, echo_json, json_option, threads_option

_DATA_PARAMS = ("data_spec", "train_size", "test_size", "img_size", "seed", "download")


def _data_config(ctx: click.Context, meta: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    """The checkpoint's own data config, with any data option given on the command line on top."""
    from edgectl.cli.options import data_config_from
    from edgectl.data import DataConfig

    given = {
        k
        for k in _DATA_PARAMS
        if ctx.get_parameter_source(k) not in (click.core.ParameterSource.DEFAULT, None)
    }
    if "data" not in meta:
        return data_config_from(kwargs)
    base = DataConfig.from_dict(meta["data"])
    if "data_spec" in given:
        new = DataConfig.from_spec(kwargs["data_spec"], img_size=base.img_size, seed=base.seed)
        if new.kind != base.kind or new.path != base.path:  # other data: its own default sizes
            base = new
    changes = {
        k: kwargs[k]
        for k in ("train_size", "test_size", "img_size", "seed", "download")
        if k in given
    }
    for k in _DATA_PARAMS:
        kwargs.pop(k, None)
    return base.replace(**changes) if changes else base


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
    from edge_common.errors import DataError
    from edgectl.checkpoint import load_checkpoint, resolve
    from edgectl.data import load_datasets
    from edgectl.evaluation import evaluate, format_report

    net, meta = load_checkpoint(model)
    cfg = _data_config(ctx, meta, kwargs)
    ds = load_datasets(cfg, augment=False)
    if meta.get("labels") and list(meta["labels"]) != list(ds.labels):
        raise DataError(
            f"{model} was trained on labels {meta['labels']}, but {cfg.spec} has {list(ds.labels)}"
        )
    path = resolve(model)
    result = evaluate(
        net, ds, threads=threads, checkpoint_path=path, latency_runs=runs, latency=not no_latency
    )
    if as_json:
        echo_json({"checkpoint": str(path), "data": cfg.to_dict(), **result})
        return
    click.echo(format_report(result, title=f"{path}  —  {ds.description}"))
