"""`edgectl data`: look at a dataset (counts per class) or export it as an image folder."""

from __future__ import annotations

from typing import Any

import click

from edgectl.cli.options import data_config_from, data_options, echo_json, json_option


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Inspect or export datasets (built-in synthetic set, CIFAR-10, image folders).

    \b
    Examples:
      edgectl data show
      edgectl data show --data folder:~/parts --json
      edgectl data export --out replay/ --test-size 200
    """


@data.command()
@data_options
@json_option
def show(as_json: bool, **kwargs: Any) -> None:
    """Print what a data spec holds: labels, reject labels and images per class."""
    from edgectl.pipeline.data import FrameDataset, class_counts, load_datasets

    cfg = data_config_from(kwargs)
    ds = load_datasets(cfg, augment=False)
    assert isinstance(ds.train, FrameDataset)  # as loaded: only a search narrows it to a Subset
    train = class_counts(ds.train, ds.labels)
    test = class_counts(ds.test, ds.labels)
    if as_json:
        echo_json(
            {
                "data": cfg.to_dict(),
                "description": ds.description,
                "labels": list(ds.labels),
                "reject_labels": list(ds.reject_labels),
                "input": ds.input_spec.to_dict(),
                "train": train,
                "test": test,
            }
        )
        return
    click.echo(ds.description)
    click.echo(f"reject labels: {', '.join(ds.reject_labels)}")
    width = max(len(lb) for lb in ds.labels)
    click.echo(f"{'class':<{width}}  {'train':>7}  {'test':>7}")
    for lb in ds.labels:
        click.echo(f"{lb:<{width}}  {train[lb]:>7}  {test[lb]:>7}")
    click.echo(f"{'total':<{width}}  {sum(train.values()):>7}  {sum(test.values()):>7}")


@data.command()
@data_options
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option(
    "--split",
    type=click.Choice(["test", "train", "all"]),
    default="test",
    show_default=True,
    help="Which split; 'all' writes train/ and test/ subfolders.",
)
@click.option("--limit", type=int, default=None, metavar="N", help="At most N images per split.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@json_option
def export(
    out: str, split: str, limit: int | None, overwrite: bool, as_json: bool, **kwargs: Any
) -> None:
    """Write a split as PNG files in class folders (for the board's replay camera).

    \b
    Examples:
      edgectl data export --out replay/                  # 1000 synthetic test images
      edgectl data export --out set/ --split all --train-size 500 --test-size 100
      edge-agent ... camera: {type: replay, path: replay/}
    """
    from edgectl.pipeline.data import export_image_folder

    cfg = data_config_from(kwargs)
    counts = export_image_folder(
        cfg, out, split=split, limit=limit, overwrite=overwrite, progress=not as_json
    )
    if as_json:
        echo_json({"out": out, "data": cfg.to_dict(), "counts": counts})
        return
    for name, per_class in counts.items():
        total = sum(per_class.values())
        detail = ", ".join(f"{lb} {n}" for lb, n in per_class.items())
        click.echo(f"{name}: {total} images -> {out} ({detail})")
