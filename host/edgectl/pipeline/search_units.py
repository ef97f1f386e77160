"""The deadline search's units: MobileNetV2's stages, two units each (its hidden width and
its output width) plus the head, and per-unit structured pruning over them.

``unit_convs``/``UNITS`` name the units, ``stage_prune`` prunes every unit to its keep ratio
(through the same Torch-Pruning path as ``pruning.structured_step``), ``stage_keep`` reads
the ratios back, ``round_channels`` is the channel arithmetic the latency table shares.
Why these units: netadapt.py's docstring.
"""

from __future__ import annotations

import math

from torch import nn

from edge_common.errors import ConfigError, ModelError
from edgectl.pipeline.pruning import channel_prune

# MobileNetV2's inverted-residual stages (torchvision's setting: n = 1, 2, 3, 4, 3, 3, 1
# blocks), as ``features`` indices. The stem (features.0) feeds stage 0's depthwise conv
# and shares its width, so it belongs to stage 0; features.18 (the 1x1 conv to 1280) is
# the head unit, the classifier never changes its class count.
MOBILENET_V2_STAGES: tuple[tuple[int, ...], ...] = (
    (0, 1), (2, 3), (4, 5, 6), (7, 8, 9, 10), (11, 12, 13), (14, 15, 16), (17,))


# The search's units, two per stage: 2k is stage k's hidden width (its blocks' expansion
# and depthwise convs; in stage 0 the stem), 2k + 1 its output width (the projections,
# shared through the residual additions); the last is the head (features.18's 1280).
# Why these: netadapt.py's docstring.
UNITS = 2 * len(MOBILENET_V2_STAGES) + 1


def unit_convs(model: nn.Module) -> list[list[str]]:
    """Names of the Conv2d layers of each search unit (:data:`UNITS`): per stage, its hidden
    convs then its projection convs; last the head's conv."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential) or len(features) != 19:
        raise ModelError("per-stage pruning needs torchvision's MobileNetV2 (19 features)")
    units: list[list[str]] = []
    for idx in MOBILENET_V2_STAGES:
        hidden, out = [], []
        for i in idx:
            convs = [f"features.{i}.{n}" for n, c in features[i].named_modules()
                     if isinstance(c, nn.Conv2d)]
            if i == 0:                                  # the stem: stage 0's hidden width
                hidden += convs
            else:                                       # an inverted residual: projection last
                hidden += convs[:-1]
                out.append(convs[-1])
        units += [hidden, out]
    return units + [[f"features.18.{n}" for n, c in features[18].named_modules()
                     if isinstance(c, nn.Conv2d)]]


def round_channels(n: float, round_to: int | None) -> int:
    """``n`` channels to the nearest multiple of ``round_to`` (at least one multiple)."""
    step = round_to if round_to and round_to > 1 else 1
    return max(step, step * int(math.floor(n / step + 0.5)))


def stage_prune(
    model: nn.Module,
    keep: list[float] | tuple[float, ...],
    img_size: int,
    round_to: int | None = 8,
    original: nn.Module | None = None,
) -> nn.Module:
    """A copy of ``model`` whose search unit ``u`` (:func:`unit_convs`: a stage's hidden or
    output width) keeps ``keep[u]`` of ``original``'s channels.

    Every conv of unit ``u`` keeps ``round_channels(keep[u] * original channels,
    round_to)`` output channels, ranked by L2 norm through the same Torch-Pruning
    path as :func:`pruning.structured_step`; ``original`` (default ``model``) is the dense model
    the ratios are of, so a pruned model can be pruned further (NetAdapt's steps). A stage
    can only shrink: asking for more channels than it has is a ModelError.
    """
    reference = original if original is not None else model
    stages = unit_convs(model)
    if len(keep) != len(stages) or not all(0.0 < k <= 1.0 for k in keep):
        raise ConfigError(f"give {len(stages)} per-unit keep ratios in (0, 1], got {keep}")
    now = {n: c.out_channels for n, c in model.named_modules() if isinstance(c, nn.Conv2d)}
    dense = {n: c.out_channels for n, c in reference.named_modules()
             if isinstance(c, nn.Conv2d)}
    ratios: dict[str, float] = {}
    for k, names in zip(keep, stages, strict=True):
        for name in names:
            target = min(dense[name], round_channels(k * dense[name], round_to))
            if target > now[name]:
                raise ModelError(f"{name} has {now[name]} channels; keep {k} asks for "
                                 f"{target} (a stage can only shrink)")
            # +0.5: Torch-Pruning keeps int(current * (1 - ratio)) channels, exactly target
            ratios[name] = max(0.0, 1.0 - (target + 0.5) / now[name])
    return channel_prune(model, 0.0, img_size, None, False, ratios)


def stage_keep(model: nn.Module, original: nn.Module) -> list[float]:
    """Per search unit: the fraction of ``original``'s conv output channels ``model`` keeps."""
    now = {n: c.out_channels for n, c in model.named_modules() if isinstance(c, nn.Conv2d)}
    dense = {n: c.out_channels for n, c in original.named_modules()
             if isinstance(c, nn.Conv2d)}
    return [sum(now[n] for n in names) / sum(dense[n] for n in names)
            for names in unit_convs(original)]
