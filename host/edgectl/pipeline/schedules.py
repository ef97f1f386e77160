"""Pruning schedules: tiny pure functions from a target to the list of step targets.

Every value is a sparsity measured against the ORIGINAL model (never compounded on what
remains), so the last value is always exactly the target. In the spirit of Torch-Pruning's
``linear_scheduler``.
"""

from __future__ import annotations

import math

_EPS = 1e-9


def oneshot_schedule(target: float, start: float = 0.0) -> list[float]:
    """One step straight to ``target``."""
    _check(target, start)
    return [target]


def linear_schedule(target: float, step: float, start: float = 0.0) -> list[float]:
    """Iterative: the multiples of ``step`` above ``start``, then ``target`` itself.

    ``linear_schedule(0.5, 0.2) == [0.2, 0.4, 0.5]``: it lands on the target, not past it.
    """
    _check(target, start)
    if step <= 0:
        raise ValueError(f"step must be positive, got {step}")
    first = math.floor(start / step + _EPS) + 1
    out = []
    k = first
    while k * step < target - _EPS:
        out.append(round(k * step, 10))
        k += 1
    out.append(target)
    return out


def polynomial_schedule(
    target: float, steps: int, start: float = 0.0, power: float = 3.0
) -> list[float]:
    """Gradual (AGP, Zhu & Gupta 2017): ``s_t = s_f + (s_i - s_f)(1 - t/n)^power``, t = 1..n.

    Prunes fast while many redundant weights remain and slowly near the target.
    """
    _check(target, start)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    out = [target + (start - target) * (1.0 - t / steps) ** power for t in range(1, steps + 1)]
    out[-1] = target
    return [round(s, 10) for s in out]


def schedule(regime: str, target: float, step: float = 0.1, start: float = 0.0) -> list[float]:
    """Step targets for ``regime`` (oneshot | iterative | gradual); gradual uses as many
    steps as iterative would."""
    if regime == "oneshot":
        return oneshot_schedule(target, start)
    if regime == "iterative":
        return linear_schedule(target, step, start)
    if regime == "gradual":
        n = len(linear_schedule(target, step, start))
        return polynomial_schedule(target, n, start)
    raise ValueError(f"unknown regime {regime!r} (expected oneshot, iterative or gradual)")


def _check(target: float, start: float) -> None:
    if not 0.0 < target < 1.0:
        raise ValueError(f"target sparsity must be in (0, 1), got {target}")
    if not 0.0 <= start < target:
        raise ValueError(f"start sparsity {start} must be in [0, target={target})")
