"""Pruning: unstructured global L1 magnitude and structured L2 channel pruning, on a schedule.

Sparsity is always defined against the ORIGINAL model and every step's amount is computed
against it, never compounded on what remains:

- unstructured: the fraction of prunable weights (Conv2d and Linear ``weight``) that are
  zero. One global L1 threshold (``torch.nn.utils.prune.global_unstructured``), made
  permanent with ``prune.remove`` so exported models carry the zeros; during fine-tuning
  the masks are re-applied after every optimizer step so zeros stay zero.
- structured: the fraction of parameters removed. Conv output channels ranked by L2 norm
  are removed physically with Torch-Pruning's dependency graph (batch norms, depthwise
  convs, residual additions and the classifier's input all follow). Channel ratio → param
  fraction is nonlinear, so the ratio is found by bisection on a copy of the model.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from edge_common.errors import ConfigError, ModelError
from edgectl.pipeline.metrics import count_macs, count_params
from edgectl.pipeline.schedules import schedule

log = logging.getLogger(__name__)

METHODS = ("unstructured", "structured")
REGIMES = ("oneshot", "iterative", "gradual")
PRUNABLE = (nn.Conv2d, nn.Linear)
TOLERANCE = 0.01
MAX_CHANNEL_RATIO = 0.95

Prunable = nn.Conv2d | nn.Linear
Masks = dict[Prunable, torch.Tensor]
# fine_tune(model, after_step) -> accuracy or None; ``after_step`` keeps pruned weights at zero.
FineTune = Callable[[nn.Module, Callable[[], None] | None], float | None]


# ---------------------------------------------------------------------------- inspection


def classifier_of(model: nn.Module) -> nn.Linear | None:
    """The last ``nn.Linear`` of the model (MobileNetV2's ``classifier[-1]``)."""
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last


def prunable_layers(model: nn.Module, exclude_classifier: bool = True) -> list[Prunable]:
    """Conv2d and Linear layers whose ``weight`` unstructured pruning may zero."""
    head = classifier_of(model) if exclude_classifier else None
    return [m for m in model.modules() if isinstance(m, PRUNABLE) and m is not head]


def weight_sparsity(model: nn.Module, exclude_classifier: bool = True) -> float:
    """Fraction of prunable weights that are exactly zero (the unstructured target)."""
    layers = prunable_layers(model, exclude_classifier)
    total = sum(m.weight.numel() for m in layers)
    zeros = sum(int((m.weight.detach() == 0).sum()) for m in layers)
    return zeros / total if total else 0.0


def count_channels(model: nn.Module) -> int:
    """Sum of Conv2d output channels (what structured pruning removes)."""
    return sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))


def check_request(method: str, regime: str, target: float, step: float = 0.1) -> None:
    """Reject bad requests with one clear line before any work is done."""
    if method not in METHODS:
        raise ConfigError(f"unknown pruning method {method!r} (expected {' or '.join(METHODS)})")
    if regime not in REGIMES:
        raise ConfigError(f"unknown pruning regime {regime!r} (expected {', '.join(REGIMES)})")
    if not (isinstance(target, (int, float)) and 0.0 < target < 1.0):
        raise ConfigError(f"--sparsity must be in (0, 1), got {target}")
    if not 0.0 < step < 1.0:
        raise ConfigError(f"--step must be in (0, 1), got {step}")


# -------------------------------------------------------------------------- unstructured


def unstructured_step(model: nn.Module, target: float, exclude_classifier: bool = True) -> Masks:
    """Zero the smallest-|w| weights so exactly ``target`` of the prunable weights are zero.

    One global L1 threshold over all layers (``prune.global_unstructured`` with
    ``L1Unstructured``), then ``prune.remove`` so no reparametrisation is left. Weights
    already zero rank lowest, so the amount is against the original count, not compounded.
    Returns the masks (True = kept) for :func:`apply_masks`.
    """
    layers = prunable_layers(model, exclude_classifier)
    total = sum(m.weight.numel() for m in layers)
    amount = int(round(target * total))
    tprune.global_unstructured(
        [(m, "weight") for m in layers], pruning_method=tprune.L1Unstructured, amount=amount
    )
    masks: Masks = {}
    for m in layers:
        masks[m] = m.get_buffer("weight_mask").detach().clone().bool()
        tprune.remove(m, "weight")
    return masks


def apply_masks(masks: Masks) -> None:
    """Force pruned weights back to zero (call after every optimizer step while fine-tuning).
    A mask follows its weight to the training device (moved once, then kept there)."""
    with torch.no_grad():
        for m, mask in masks.items():
            if mask.device != m.weight.device:
                mask = masks[m] = mask.to(m.weight.device)
            m.weight.mul_(mask)


# ---------------------------------------------------------------------------- structured


def channel_prune(
    model: nn.Module, ratio: float, img_size: int, round_to: int | None, global_pruning: bool,
    ratios: dict[str, float] | None = None,
) -> nn.Module:
    """A copy of ``model`` with ``ratio`` of its channels removed by L2 norm (Torch-Pruning).

    ``ratios`` (module name → ratio of that layer's current output channels) overrides
    ``ratio`` per layer (Torch-Pruning's ``pruning_ratio_dict``):
    :func:`edgectl.pipeline.search_units.stage_prune`."""
    import torch_pruning as tp

    m = copy.deepcopy(model).eval()
    if ratio <= 0 and not ratios:
        return m
    head = classifier_of(m)
    by_name = dict(m.named_modules())
    pruner = tp.pruner.BasePruner(
        m,
        torch.zeros(1, 3, img_size, img_size),
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio,
        pruning_ratio_dict={by_name[n]: r for n, r in (ratios or {}).items()} or None,
        global_pruning=global_pruning,
        ignored_layers=[head] if head is not None else [],  # the class count never changes
        round_to=round_to,
    )
    pruner.step()
    return m


def structured_step(
    model: nn.Module,
    target: float,
    original_params: int,
    img_size: int,
    round_to: int | None = 8,
    global_pruning: bool = False,
    tolerance: float = TOLERANCE,
) -> tuple[nn.Module, float]:
    """Return ``(pruned copy, channel ratio)`` with ``1 - params/original_params ≈ target``.

    The removed param fraction grows monotonically (in ``round_to`` steps) but nonlinearly
    with Torch-Pruning's channel ratio, so the ratio is solved for on copies of ``model``:
    a first guess from "params scale with channels²", then regula falsi (Illinois) inside
    the bracket, usually 2-4 prunings. The copy closest to the target wins.
    """
    tried = _solve_ratio(model, target, original_params, img_size, round_to, global_pruning,
                         tolerance)
    best = min(tried, key=lambda c: abs(c[2] - target))
    if abs(best[2] - target) > tolerance / 2 and not global_pruning:
        # Torch-Pruning's local mode removes at least one channel from every layer for any
        # ratio > 0, too coarse for a small last step: refine with global ranking instead.
        tried += _solve_ratio(model, target, original_params, img_size, round_to, True,
                              tolerance)
    best = min(tried, key=lambda c: abs(c[2] - target))
    if abs(best[2] - target) > tolerance:
        if max(t[2] for t in tried) < target:
            raise ModelError(
                f"structured pruning cannot remove {target:.2f} of the parameters "
                f"(reached {best[2]:.2f}); lower --sparsity or --round-to"
            )
        log.warning(
            "structured pruning landed on %.3f for target %.3f (channel granularity; try a "
            "smaller --round-to)", best[2], target,
        )
    return best[0], best[1]


def _solve_ratio(
    model: nn.Module,
    target: float,
    original_params: int,
    img_size: int,
    round_to: int | None,
    global_pruning: bool,
    tolerance: float,
) -> list[tuple[nn.Module, float, float]]:
    """Candidates ``(pruned copy, ratio, removed fraction)`` converging on ``target``."""
    current = count_params(model)

    def removed(m: nn.Module) -> float:
        return 1.0 - count_params(m) / original_params

    # Fraction of the *current* params to remove; a channel ratio r keeps ~(1-r)² of them.
    need = 1.0 - (1.0 - target) * original_params / current
    r = min(MAX_CHANNEL_RATIO * 0.9, 1.0 - math.sqrt(max(1.0 - need, 0.0)))
    lo, flo = 0.0, removed(model)
    hi, fhi = MAX_CHANNEL_RATIO, 1.0  # virtual anchor: ~all params gone near ratio 1
    side = 0
    tried: list[tuple[nn.Module, float, float]] = [(model, 0.0, flo)]
    for _ in range(12):
        cand = channel_prune(model, r, img_size, round_to, global_pruning)
        frac = removed(cand)
        tried.append((cand, r, frac))
        if abs(frac - target) <= tolerance / 2:
            break
        if frac < target:
            lo, flo = r, frac
            if side == -1:
                fhi = target + (fhi - target) / 2  # Illinois: don't let one end stall
            side = -1
        else:
            hi, fhi = r, frac
            if side == 1:
                flo = target - (target - flo) / 2
            side = 1
        nxt = lo + (target - flo) * (hi - lo) / (fhi - flo) if fhi > flo else (lo + hi) / 2
        if not lo < nxt < hi or min(abs(nxt - t[1]) for t in tried) < 1e-4:
            nxt = (lo + hi) / 2
        if hi - lo < 1e-4:
            break
        r = nxt
    return tried


# -------------------------------------------------------------------------------- driver


def current_sparsity(
    model: nn.Module, method: str, original_params: int, exclude_classifier: bool = True
) -> float:
    """Sparsity of ``model`` as ``method`` defines it, against the original model."""
    if method == "unstructured":
        return weight_sparsity(model, exclude_classifier)
    return 1.0 - count_params(model) / original_params


def check_start(
    model: nn.Module,
    method: str,
    target: float,
    original_params: int | None = None,
    exclude_classifier: bool = True,
) -> float:
    """The model's current sparsity; a ConfigError when ``target`` is not above it."""
    start = current_sparsity(
        model, method, original_params or count_params(model), exclude_classifier
    )
    if target <= start + 1e-6:
        raise ConfigError(
            f"the model is already at {start:.3f} {method} sparsity; ask for more than that "
            f"(got --sparsity {target})"
        )
    return start


def lineage(meta: dict[str, Any] | None, model: nn.Module) -> tuple[int, int]:
    """``(original params, original conv channels)``: a pruned parent's meta, else the model."""
    p = (meta or {}).get("pruning") or {}
    return (
        int(p.get("original_params") or count_params(model)),
        int(p.get("original_channels") or count_channels(model)),
    )


def prune_model(
    model: nn.Module,
    method: str,
    regime: str,
    target: float,
    *,
    step: float = 0.1,
    img_size: int = 64,
    round_to: int | None = 8,
    exclude_classifier: bool = True,
    global_pruning: bool = False,
    original_params: int | None = None,
    original_channels: int | None = None,
    fine_tune: FineTune | None = None,
    progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Prune ``model`` to ``target`` sparsity following ``regime`` and return ``(model, report)``.

    ``fine_tune(model, after_step)`` runs after every pruning step (``after_step`` re-applies
    the unstructured masks; it is None for structured) and returns the accuracy or None.
    Structured pruning returns a new module; unstructured prunes ``model`` in place.
    ``original_params``/``original_channels`` describe the unpruned ancestor (see
    :func:`lineage`); by default ``model`` itself is the original. The report holds
    ``method, regime, target, actual, step, steps[{target, actual, accuracy, params,
    nonzero_weights}], params_before/after, macs_before/after, macs_reduction,
    channel_ratio, original_params, original_channels``.
    """
    check_request(method, regime, target, step)
    original_params = original_params or count_params(model)
    original_channels = original_channels or count_channels(model)
    start = check_start(model, method, target, original_params, exclude_classifier)
    targets = schedule(regime, target, step, start)
    params_before, macs_before = count_params(model), count_macs(model, img_size)
    steps: list[dict[str, Any]] = []
    masks: Masks = {}
    for s in _progress(targets, progress, f"{method} {regime}"):
        ratio = None
        if method == "unstructured":
            masks = unstructured_step(model, s, exclude_classifier)
        else:
            model, ratio = structured_step(
                model, s, original_params, img_size, round_to, global_pruning
            )
        acc = None
        if fine_tune is not None:
            hook = (lambda m=masks: apply_masks(m)) if masks else None
            acc = fine_tune(model, hook)
            if masks:
                apply_masks(masks)
        actual = current_sparsity(model, method, original_params, exclude_classifier)
        steps.append({
            "target": s,
            "actual": actual,
            "accuracy": acc,
            "params": count_params(model),
            "nonzero_weights": _nonzero_weights(model, exclude_classifier),
            **({"channel_ratio_step": ratio} if ratio is not None else {}),
        })
    model.eval()
    macs_after = count_macs(model, img_size)
    report = {
        "method": method,
        "regime": regime,
        "target": target,
        "actual": steps[-1]["actual"],
        "start": start,
        "step": step if regime != "oneshot" else None,
        "steps": steps,
        "round_to": round_to if method == "structured" else None,
        "exclude_classifier": exclude_classifier,
        "global_pruning": global_pruning if method == "structured" else None,
        "params_before": params_before,
        "params_after": count_params(model),
        "macs_before": macs_before,
        "macs_after": macs_after,
        "macs_reduction": 1.0 - macs_after / macs_before if macs_before else 0.0,
        "channel_ratio": 1.0 - count_channels(model) / original_channels,
        "original_params": original_params,
        "original_channels": original_channels,
    }
    return model, report


def _nonzero_weights(model: nn.Module, exclude_classifier: bool) -> int:
    layers = prunable_layers(model, exclude_classifier)
    return sum(int(torch.count_nonzero(m.weight.detach())) for m in layers)


def _progress(items: list[float], enabled: bool, desc: str) -> Iterable[float]:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="step", leave=False)
