"""Retry backoff (``edge_agent.backoff``): exponential, capped, jittered."""

from __future__ import annotations

import random

import pytest

from edge_agent.backoff import backoff_delay


def test_backoff_grows_is_capped_and_jittered():
    assert backoff_delay(0, 0.5, 60, 0.3) == 0.0
    ceilings = [backoff_delay(f, 0.5, 60, 0.999999) for f in range(1, 12)]
    assert ceilings[:4] == pytest.approx([0.5, 1.0, 2.0, 4.0], rel=1e-3)
    assert max(ceilings) == pytest.approx(60, rel=1e-3)
    assert all(a <= b for a, b in zip(ceilings, ceilings[1:], strict=False))
    rng = random.Random(0)
    delays = [backoff_delay(5, 0.5, 60, rng.random()) for _ in range(200)]
    assert min(delays) >= 4.0 and max(delays) <= 8.0 and len(set(delays)) > 100
    assert backoff_delay(10**6, 0.5, 60, 0.5) <= 60
