"""`edgectl study`: the pruning grid (heuristic × regime × target sparsity) in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgectl import study as st
from edgectl.cli.options import (
    data_config_from,
    data_options,
    device_option,
    echo_json,
    json_option,
    pruning_grid_options,
    start_compute,
    threads_option,
)


@click.command("study")
@pruning_grid_options(",".join(st.METHODS), ",".join(st.REGIMES[:2]), "0.3,0.5,0.7",
                      st.DEFAULT_STEP)
@data_options
@click.option(
    "--epochs",
    type=int,
    default=None,
    metavar="N",
    help=f"Baseline training epochs.  [default: {st.DEFAULT_EPOCHS}]",
)
@click.option(
    "--finetune-epochs",
    type=float,
    default=None,
    metavar="N",
    help="Fine-tune budget per cell, in epochs (may be fractional); iterative splits it"
    f" evenly over its steps.  [default: {st.DEFAULT_FINETUNE_EPOCHS:g}]",
)
@click.option(
    "--width",
    "width_mult",
    type=float,
    default=1.0,
    show_default=True,
    help="MobileNetV2 width multiplier of a newly trained baseline.",
)
@click.option(
    "--from",
    "from_model",
    type=click.Path(path_type=Path),
    default=None,
    metavar="MODEL",
    help="Reuse this baseline checkpoint instead of training one.",
)
@click.option(
    "--seeds",
    type=int,
    default=1,
    show_default=True,
    help="Repeat each cell with this many fine-tune seeds (mean ± std).",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted study in --out.")
@click.option(
    "--latency-runs",
    type=int,
    default=st.StudyConfig.latency_runs,
    show_default=True,
    metavar="N",
    help="Timed runs per latency median.",
)
@click.option(
    "--latency-time",
    "latency_min_s",
    type=float,
    default=st.StudyConfig.latency_min_s,
    show_default=True,
    metavar="S",
    help="Keep timing each median for at least S seconds.",
)
@threads_option
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--no-progress", is_flag=True, help="No progress bars (one line per cell stays).")
@device_option
@json_option
def study(as_json: bool, no_progress: bool, **kwargs: Any) -> None:
    """Regenerate the pruning study: every method × regime × target sparsity, pruned from
    one baseline, fine-tuned and measured (accuracy, size, MACs, latency on PyTorch eager,
    ORT FP32 and ORT INT8). Writes OUT/results.csv, results.json, the plots and report.md;
    each finished cell is saved under OUT/cells/ so --resume skips it."""
    kwargs["device"] = start_compute(kwargs.pop("device"))  # StudyConfig.device
    data = data_config_from(kwargs)
    given = {k: v for k, v in kwargs.items() if v is not None}
    cfg = st.StudyConfig(data=data, progress=not no_progress and not as_json, **given)
    result = st.run_study(cfg)
    if as_json:
        echo_json(
            {
                "table": result.table.to_dict(orient="records"),
                "best": result.best,
                "files": {k: str(v) for k, v in result.files.items()},
                "computed": result.computed,
                "reused": result.reused,
            }
        )
        return
    click.echo(st.markdown_table(result.table))
    if result.best:
        b = result.best
        name = (
            st.BASELINE
            if b["method"] == st.BASELINE
            else (f"{b['method']} {b['regime']} {b['target_sparsity']:.2f}")
        )
        click.echo(
            f"\nbest trade-off: {name} on ORT {b['precision'].upper()}, "
            f"{b['latency_ms']:.2f} ms, accuracy {b['accuracy'] * 100:.1f}%"
        )
    click.echo(f"report: {result.files['report']}")
