"""Options shared by several commands, declared once and stacked as decorators."""

from __future__ import annotations

import json as _json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(f: F) -> F:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


def _positive(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be a positive integer, got {value}")
    return value


data_options = _stack(
    click.option("--data", "data_spec", default="synthetic", show_default=True, metavar="SPEC",
                 help="synthetic | cifar10:DIR | folder:DIR"),
    click.option("--train-size", type=int, default=None, callback=_positive, metavar="N",
                 help="Training images (default: 16000 synthetic, all for other data)."),
    click.option("--test-size", type=int, default=None, callback=_positive, metavar="N",
                 help="Test images (default: 1000 synthetic, all for other data)."),
    click.option("--img-size", type=int, default=64, show_default=True, callback=_positive,
                 help="Model input size in pixels (square)."),
    click.option("--seed", type=int, default=0, show_default=True,
                 help="Seed for data and training."),
    click.option("--download", is_flag=True, help="Allow downloading CIFAR-10 (needs network)."),
)

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")

threads_option = click.option("--threads", type=int, default=1, show_default=True,
                              callback=_positive, help="CPU threads for latency measurements.")


def data_config_from(kwargs: dict[str, Any]) -> Any:
    """Pop the data options out of a command's kwargs and build a ``DataConfig``."""
    from edgectl.pipeline.data import DataConfig

    return DataConfig.from_spec(
        kwargs.pop("data_spec"),
        train_size=kwargs.pop("train_size"),
        test_size=kwargs.pop("test_size"),
        img_size=kwargs.pop("img_size"),
        seed=kwargs.pop("seed"),
        download=kwargs.pop("download"),
    )


DATA_PARAMS = ("data_spec", "train_size", "test_size", "img_size", "seed", "download")


def checkpoint_data_config(ctx: click.Context, meta: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    """The checkpoint's own data config (``meta["data"]``) with data options typed on the
    command line on top (defaults do not count). Pops the data options out of ``kwargs``.

    Shared by ``eval``, ``prune``, ``export`` and ``quantize``: a model is evaluated on the
    data it was trained on unless the user says otherwise.
    """
    from edgectl.pipeline.data import DataConfig

    given = {
        k for k in DATA_PARAMS
        if ctx.get_parameter_source(k) not in (click.core.ParameterSource.DEFAULT, None)
    }
    if "data" not in meta:
        return data_config_from(kwargs)
    base = DataConfig.from_dict(meta["data"])
    if "data_spec" in given:
        new = DataConfig.from_spec(kwargs["data_spec"], img_size=base.img_size, seed=base.seed)
        if new.kind != base.kind or new.path != base.path:  # other data: its own default sizes
            base = new
    changes = {k: kwargs[k] for k in DATA_PARAMS[1:] if k in given}
    for k in DATA_PARAMS:
        kwargs.pop(k, None)
    return base.replace(**changes) if changes else base


def check_labels(model: Any, meta: dict[str, Any], cfg: Any, labels: Any) -> None:
    """A checkpoint can only be evaluated or fine-tuned on data with its own labels."""
    from edge_common.errors import DataError

    if meta.get("labels") and list(meta["labels"]) != list(labels):
        raise DataError(
            f"{model} was trained on labels {meta['labels']}, but {cfg.spec} has {list(labels)}"
        )


def echo_json(obj: Any) -> None:
    click.echo(_json.dumps(obj, indent=2, sort_keys=True, default=str))


# Pruning options: declared once for `build`, `prune` and `study` (same names, defaults and
# help). Values are checked in one place, ``pipeline.pruning.check_request`` (called by
# BuildConfig.validate, StudyConfig.validate and `prune`), not by click types here.
PRUNE_DEFAULTS = {"method": "unstructured", "sparsity": 0.5, "regime": "oneshot", "step": 0.1,
                  "round_to": 8, "finetune_epochs": 5}
_METHOD_HELP = ("unstructured: global L1, zeroes weights (no speed on dense runtimes); "
                "structured: removes channels (smaller and faster)")
_SPARSITY_HELP = ("of the original model, in (0, 1): unstructured = share of prunable weights "
                  "zeroed; structured = share of parameters removed")
_REGIME_HELP = "oneshot | iterative (fine-tune after every --step) | gradual"


def _csv(kind: type) -> Callable[[click.Context, click.Parameter, str], tuple[Any, ...]]:
    """Click callback: ``a,b,c`` → a tuple of ``kind`` (one clear line on bad input)."""

    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple[Any, ...]:
        items = [v.strip() for v in value.split(",") if v.strip()]
        if not items:
            raise click.BadParameter("give at least one value")
        try:
            return tuple(kind(v) for v in items)
        except ValueError as err:
            raise click.BadParameter(f"not a list of {kind.__name__}: {value!r}") from err

    return parse


def pruning_options(with_none: bool = False) -> Callable[[F], F]:
    """``--method/--prune``, ``--sparsity``, ``--regime``, ``--step``, ``--round-to``,
    ``--finetune-epochs`` for one pruning run (``build`` also takes ``--prune none``)."""
    d = PRUNE_DEFAULTS
    methods = "none|unstructured|structured" if with_none else "unstructured|structured"
    return _stack(
        click.option("--prune", "--method", "method", default=d["method"], show_default=True,
                     metavar=methods, help=f"Pruning method. {_METHOD_HELP}."),
        click.option("--sparsity", type=float, default=d["sparsity"], show_default=True,
                     metavar="F", help=f"Target sparsity {_SPARSITY_HELP}."),
        click.option("--regime", default=d["regime"], show_default=True, metavar="NAME",
                     help=f"How to reach the target: {_REGIME_HELP}."),
        click.option("--step", type=float, default=d["step"], show_default=True, metavar="F",
                     help="Iterative/gradual: sparsity added per step (of the original)."),
        click.option("--round-to", type=click.IntRange(min=0), default=d["round_to"],
                     show_default=True, metavar="N",
                     help="Structured: keep channel counts multiples of N (0 = off; measured: "
                          "odd counts can make a pruned model slower than dense)."),
        click.option("--finetune-epochs", type=click.IntRange(min=0),
                     default=d["finetune_epochs"], show_default=True, metavar="N",
                     help="Fine-tune epochs after each pruning step (one-shot: after the one "
                          "step)."),
    )


def pruning_grid_options(methods: str, regimes: str, sparsities: str,
                         step: float) -> Callable[[F], F]:
    """The study's grid: the same options as :func:`pruning_options`, as comma lists."""
    return _stack(
        click.option("--methods", default=methods, show_default=True, callback=_csv(str),
                     metavar="LIST", help=f"Pruning methods, comma-separated. {_METHOD_HELP}."),
        click.option("--regimes", default=regimes, show_default=True, callback=_csv(str),
                     metavar="LIST", help=f"Regimes, comma-separated: {_REGIME_HELP}."),
        click.option("--sparsities", default=sparsities, show_default=True,
                     callback=_csv(float), metavar="LIST",
                     help=f"Target sparsities, comma-separated, each {_SPARSITY_HELP}."),
        click.option("--step", type=float, default=step, show_default=True, metavar="F",
                     help="Iterative/gradual: sparsity added per step (of the original)."),
    )


def _parse_formats(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    # A ModelError (an EdgeError) here ends the command with one red line, exit 1.
    from edgectl.pipeline.export import parse_formats

    return tuple(parse_formats(value))


def formats_option(flag: str = "--formats", default: str = "onnx,tflite") -> Callable[[F], F]:
    """The artifact formats, comma-separated, parsed once by ``export.parse_formats``
    (``build --formats``; ``export``/``quantize --format``)."""
    return click.option(flag, "formats", default=default, show_default=True, metavar="LIST",
                        callback=_parse_formats, help="Artifact formats, comma-separated: "
                        "onnx, tflite.")


calib_size_option = click.option(
    "--calib-size", type=int, default=300, show_default=True, callback=_positive, metavar="N",
    help="Training images (never test images) that calibrate INT8 activation ranges.")


# Compute: where training runs. Declared once for `train`, `prune`, `build` and `study`; the
# logic (auto = CUDA, then MPS, then CPU; mixed precision; memory format; loader workers)
# is ``pipeline.compute``. The command calls :func:`start_compute` with the value.
def _device_choice(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from edgectl.pipeline.compute import DEVICES

    kind = (value or "auto").strip().lower()
    if kind.split(":")[0] not in DEVICES:
        raise click.BadParameter(f"expected one of {', '.join(DEVICES)} (cuda:N for one GPU), "
                                 f"got {value!r}")
    return kind


device_option = click.option(
    "--device", "device", default="auto", show_default=True, envvar="EDGECTL_DEVICE",
    show_envvar=True, callback=_device_choice, metavar="auto|cpu|cuda|mps",
    help="Where training and fine-tuning run: auto picks CUDA, then MPS, then the CPU "
         "(CUDA trains in mixed precision). Pruning, export and evaluation stay on the CPU.")


def default_cache_dir() -> Path:
    """Where cached baselines and latency tables go unless told: ``$EDGECTL_CACHE``, else
    ``~/.cache/edgectl`` (the pipeline takes the folder as ``BuildConfig.cache_dir``)."""
    from edgectl.pipeline.build import USER_CACHE

    return Path(os.environ.get("EDGECTL_CACHE") or USER_CACHE)


def start_compute(device: str) -> str:
    """Say on stderr what this long command runs on (the training ``device``, CPU model,
    ISA, threads) and return ``device`` for the command to pass on. A device this machine
    lacks is one clear error before any work."""
    from edgectl.pipeline import compute

    compute.resolve(device)
    click.echo(compute.banner(device), err=True)
    return device

