"""The bundle's latency budget, checked on the board that runs it.

A bundle made by ``edgectl build --target-latency-ms`` records in its manifest the budget
it was built for and where it was measured (``deadline``: ``budget_ms``, ``quantile``
(``p95``), ``device``, ``cpu``, ``runtime``, ``precision``, ``threads``,
``measured_ms``). A bundle built for another board can be slower here. ``BudgetWatch``
keeps the last ``window`` inference times (the runtime's ``session.run``, what the budget
measured) and every ``every`` items compares their p95 with the budget: over it, the
fault ``latency_budget`` (status, heartbeat, log, the agent's and the collector's
``/metrics``); back under it, cleared. It never changes a decision: parts late for the
rejector are already rejected by the deadline check (the line's configured safe
behaviour), this says why it keeps happening.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

FAULT = "latency_budget"


def budget_of(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's ``deadline`` section when it names a usable budget, else None."""
    d = manifest.get("deadline")
    if not isinstance(d, dict):
        return None
    b = d.get("budget_ms")
    if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) or b <= 0:
        return None
    return d


class BudgetWatch:
    """Raise or clear the ``latency_budget`` fault from the inference times seen."""

    def __init__(self, raise_fault: Callable[[str, str], None],
                 clear_fault: Callable[[str], None], window: int = 200, every: int = 50,
                 min_items: int = 50) -> None:
        self._raise, self._clear = raise_fault, clear_fault
        self.window, self.every, self.min_items = window, every, min_items
        self._times: deque[float] = deque(maxlen=window)
        self._version: str | None = None
        self._budget: dict[str, Any] | None = None
        self._n = 0
        self.over = False
        self.p95_ms: float | None = None

    @property
    def budget_ms(self) -> float | None:
        return None if self._budget is None else float(self._budget["budget_ms"])

    def add(self, version: str, manifest: dict[str, Any], inference_ms: float | None) -> None:
        """One item served by model ``version`` (its bundle ``manifest``)."""
        if version != self._version:  # a new model (start, update, rollback): start over
            self._version, self._budget = version, budget_of(manifest)
            self._times.clear()
            self._n = 0
            if self.over:
                self._clear(FAULT)
                self.over = False
        if self._budget is None or inference_ms is None:
            return
        self._times.append(float(inference_ms))
        self._n += 1
        if self._n < self.min_items or self._n % self.every:
            return
        ordered = sorted(self._times)
        self.p95_ms = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
        budget = float(self._budget["budget_ms"])
        if self.p95_ms > budget and not self.over:
            b = self._budget
            where = ", ".join(str(b[k]) for k in ("device", "cpu") if b.get(k))
            self._raise(FAULT, f"inference p95 {self.p95_ms:.2f} ms over the bundle's budget of "
                               f"{budget:g} ms (built and measured for {where or 'another board'}"
                               f"; last {len(self._times)} items)")
            self.over = True
        elif self.p95_ms <= budget and self.over:
            self._clear(FAULT)
            self.over = False
