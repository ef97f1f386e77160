"""The pure decision function: threshold on summed reject probability, review band, errors."""

from __future__ import annotations

import pytest

from edge_agent.decision import Policy, decide, decide_error

LABELS = ["ok", "scratch", "crack"]
REJECT = ["scratch", "crack"]


@pytest.mark.parametrize(
    ("probs", "policy", "decision", "action"),
    [
        ([0.9, 0.05, 0.05], Policy(0.5), "ok", "pass"),
        # Neither defect alone reaches 0.5, their sum does: reject.
        ([0.4, 0.3, 0.3], Policy(0.5), "reject", "reject"),
        ([0.55, 0.45, 0.0], Policy(0.5, review_margin=0.1), "review", "reject"),
        ([0.55, 0.45, 0.0], Policy(0.5, review_margin=0.1, review_policy="pass"), "review", "pass"),
        ([0.35, 0.65, 0.0], Policy(0.5, review_margin=0.1), "reject", "reject"),
        ([0.65, 0.35, 0.0], Policy(0.5, review_margin=0.1), "ok", "pass"),
        ([0.2, 0.8, 0.0], Policy(0.9), "ok", "pass"),
    ],
)
def test_decide(probs, policy, decision, action):
    v = decide(probs, LABELS, REJECT, policy)
    assert (v.decision, v.action) == (decision, action)
    assert v.reject_score == pytest.approx(probs[1] + probs[2])


def test_errors_follow_the_error_policy():
    v = decide_error("camera gone", Policy(error_policy="pass"))
    assert v.decision == "review" and v.action == "pass" and v.error == "camera gone"
    assert decide_error("x", Policy(error_policy="reject")).rejects


def test_mismatched_probabilities_are_refused():
    with pytest.raises(ValueError):
        decide([0.5, 0.5], LABELS, REJECT, Policy())
