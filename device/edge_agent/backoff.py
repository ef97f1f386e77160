"""Retry backoff: how long to wait after consecutive failures (the collector away, a camera
that dropped out, a PLC that does not answer). One pure function; each caller does its
own waiting.
"""

from __future__ import annotations


def backoff_delay(failures: int, base_s: float, max_s: float, u: float = 1.0) -> float:
    """Seconds to wait after ``failures`` consecutive failures (``failures >= 1``).

    Exponential (``base_s * 2**(failures-1)``) capped at ``max_s``, with jitter: ``u`` in
    [0, 1) picks a point in the upper half of that interval, so a fleet that lost its host
    at the same moment does not come back in lockstep, yet never retries too eagerly.
    ``u = 1`` (the default): no jitter, the ceiling itself (one camera, one PLC link).

    Hand-written rather than tenacity: the three callers do not retry a call. The camera
    schedules its next reopen without sleeping (the main loop keeps running), sync waits
    on its stop event with a base that depends on the error, the PLC client sleeps in a
    worker that also drains its outbox; all they share is this formula, and the board
    would carry a dependency for ten lines.
    """
    if failures <= 0:
        return 0.0
    ceiling = min(max_s, base_s * (2.0 ** min(failures - 1, 30)))
    return ceiling * (0.5 + 0.5 * min(max(u, 0.0), 1.0))
