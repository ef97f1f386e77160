"""Pure decision logic: class probabilities → ok / reject / review, and what to do with it.

``reject_score`` is the summed probability of the bundle's reject labels. An item is
rejected when ``reject_score ≥ threshold``; items within ``review_margin`` of the
threshold are low-confidence "review" items and follow ``review_policy`` (reject, or pass
and flag). Unclassifiable items (camera or model errors) are "review" items that follow
``error_policy``. ``keep_sample``: whether a decision's image goes to the host. No I/O
here: the actuator and journal act on the returned verdict.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edge_agent.config import SamplesConfig


@dataclass(frozen=True)
class Policy:
    """Decision thresholds and policies (see ``DecisionConfig``)."""

    threshold: float = 0.5
    review_margin: float = 0.0
    review_policy: str = "reject"  # reject | pass
    error_policy: str = "reject"  # reject | pass


@dataclass(frozen=True)
class Verdict:
    """The outcome for one item. ``action`` is what the rejector does: reject | pass."""

    decision: str  # ok | reject | review
    action: str  # reject | pass
    label: str | None  # top-1 label (None when unclassifiable)
    score: float  # top-1 probability
    reject_score: float  # summed probability of the reject labels
    error: str | None = None

    @property
    def rejects(self) -> bool:
        return self.action == "reject"


def decide(
    probs: np.ndarray | Sequence[float],
    labels: Sequence[str],
    reject_labels: Sequence[str],
    policy: Policy,
) -> Verdict:
    """Decide for one item from its class probabilities (same order as ``labels``).

    Scores that are not finite probabilities (NaN or inf from a model or an input spec
    gone wrong, or values outside [0, 1]) make the item unclassifiable: NaN compares
    false with every threshold, so it would otherwise pass every part."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.shape[0] != len(labels):
        raise ValueError(f"{p.shape[0]} probabilities for {len(labels)} labels")
    bad = nonfinite_reason(p)
    if bad is not None:
        return decide_error(bad, policy)
    top = int(np.argmax(p))
    reject_idx = [i for i, name in enumerate(labels) if name in set(reject_labels)]
    reject_score = float(p[reject_idx].sum()) if reject_idx else 0.0
    lo = policy.threshold - policy.review_margin
    hi = policy.threshold + policy.review_margin
    if policy.review_margin > 0 and lo <= reject_score < hi:
        decision, action = "review", policy.review_policy
    elif reject_score >= policy.threshold:
        decision, action = "reject", "reject"
    else:
        decision, action = "ok", "pass"
    return Verdict(decision, action, labels[top], float(p[top]), reject_score)


def nonfinite_reason(p: np.ndarray) -> str | None:
    """Why ``p`` are not usable probabilities (None when they are)."""
    if not bool(np.all(np.isfinite(p))):
        return f"non-finite scores ({int(np.sum(~np.isfinite(p)))} of {p.size} not finite)"
    if p.size and (float(p.min()) < -1e-6 or float(p.max()) > 1.0 + 1e-6):
        return f"scores outside [0, 1] (min {float(p.min()):.3g}, max {float(p.max()):.3g})"
    return None


def decide_error(error: str, policy: Policy) -> Verdict:
    """The verdict for an item that could not be classified: flagged, per ``error_policy``."""
    return Verdict("review", policy.error_policy, None, 0.0, float("nan"), error=error)


def keep_sample(samples: SamplesConfig, decision: str, rng: random.Random) -> bool:
    """Whether a decision's image is kept for the host (``samples:``): every reject and
    every review when asked, else a random ``rate`` of all decisions."""
    if not samples.enabled:
        return False
    if decision == "reject" and samples.rejects:
        return True
    if decision == "review" and samples.reviews:
        return True
    return samples.rate > 0 and rng.random() < samples.rate
