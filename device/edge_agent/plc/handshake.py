"""The PLC handshake as a pure state machine, the same for every backend (no I/O, no clock).

A part is *triggered* (by the PLC, or by the agent's own trigger) and gets a sequence
number; its *verdict* must arrive before ``trigger + deadline``, or the part gets a
**Fail** with fault ``TIMEOUT`` (the PLC's own default is to reject too). Results leave in
trigger order, first in first out, so the PLC matches each result to the head of its part
queue; a verdict that arrives out of order waits for the parts before it. A fault
(``fault()``: a backend link down, the agent stopping) fails every undecided part at once
and every new trigger until ``clear_fault()``. Times are ``CLOCK_MONOTONIC`` nanoseconds
handed in by the caller (``plc/station.py`` drives it; tests hand in any numbers).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

# Fault codes (the ``fault`` register / node / JSON field; docs/plc.md).
FAULT_NONE = 0
FAULT_TIMEOUT = 1  # no verdict before the result deadline
FAULT_UNCLASSIFIABLE = 2  # camera or model error: the verdict follows decision.error_policy
FAULT_STOPPED = 3  # the agent stopped (or failed) with the part undecided
FAULT_OVERRUN = 4  # more parts in flight than plc.max_in_flight
FAULT_LINK = 5  # a PLC backend faulted (server down, link lost)
FAULT_DUPLICATE = 6  # the PLC reused the sequence number of a part still in flight
FAULT_NAMES = {
    FAULT_NONE: "none",
    FAULT_TIMEOUT: "timeout",
    FAULT_UNCLASSIFIABLE: "unclassifiable",
    FAULT_STOPPED: "stopped",
    FAULT_OVERRUN: "overrun",
    FAULT_LINK: "link",
    FAULT_DUPLICATE: "duplicate",
}
# What a part failed for, said in its journal record (a part with no verdict of its own).
FAULT_REASONS = {
    "timeout": "no verdict before the part's result deadline",
    "stopped": "the agent stopped with the part undecided",
    "overrun": "more parts in flight than plc.max_in_flight",
    "link": "a PLC link was down when the part was triggered or undecided",
    "duplicate": "the PLC reused the number of a part still in flight",
}
SEQ_MAX = 65535  # one 16-bit register; 0 means "no part"
NO_CLASS = 65535  # class id of an unclassified part


@dataclass(frozen=True)
class Result:
    """What the PLC gets for one part. ``passed`` False = Fail (reject)."""

    seq: int
    passed: bool
    class_id: int = NO_CLASS
    confidence: float = 0.0  # top-1 probability, 0..1
    fault: int = FAULT_NONE
    t_trigger_ns: int = 0
    t_result_ns: int = 0
    delivered: bool = True  # False: never confirmed by the PLC (station.undelivered)

    @property
    def fault_name(self) -> str:
        return FAULT_NAMES.get(self.fault, str(self.fault))


@dataclass
class Part:
    seq: int
    t_trigger_ns: int
    deadline_ns: int
    result: Result | None = None


class Handshake:
    """Parts in flight, their deadlines and the FIFO of results (see the module docstring)."""

    def __init__(self, deadline_ms: float, max_in_flight: int = 16) -> None:
        self.deadline_ns = int(deadline_ms * 1e6)
        self.max_in_flight = max_in_flight
        self.parts: collections.deque[Part] = collections.deque()  # trigger order
        self.fault_code = FAULT_NONE
        self.fault_reason: str | None = None
        self._next_seq = 1
        self._timed_out: collections.deque[int] = collections.deque(maxlen=1024)
        self.counts = {
            "triggered": 0, "results": 0, "passed": 0, "failed": 0, "timeouts": 0,
            "late": 0, "unknown": 0, "faulted": 0,
        }

    # -- state the backends show ---------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self.parts)

    @property
    def busy(self) -> bool:
        """A part is waiting for its verdict."""
        return any(p.result is None for p in self.parts)

    @property
    def ready(self) -> bool:
        """A new trigger would be accepted (no fault, room in the FIFO)."""
        return self.fault_code == FAULT_NONE and len(self.parts) < self.max_in_flight

    def next_deadline_ns(self) -> int | None:
        pending = [p.deadline_ns for p in self.parts if p.result is None]
        return min(pending) if pending else None

    def _find(self, seq: int) -> Part | None:
        for part in self.parts:
            if part.seq == seq and part.result is None:
                return part
        return None

    # -- events --------------------------------------------------------------------------

    def trigger(self, now_ns: int, seq: int | None = None) -> Part:
        """A part arrived. ``seq``: the PLC's number (1..65535), or None/0 for our own.

        A part that cannot be inspected (fault, FIFO full, a number still in flight) is
        failed at once but still queued, so the FIFO order the PLC relies on holds.
        """
        if not seq:
            seq = self._next_seq
        self._next_seq = seq % SEQ_MAX + 1
        self.counts["triggered"] += 1
        fault = FAULT_NONE
        if self.fault_code != FAULT_NONE:
            fault = self.fault_code
        elif self._find(seq) is not None:
            fault = FAULT_DUPLICATE
        elif len(self.parts) >= self.max_in_flight:
            fault = FAULT_OVERRUN
        part = Part(seq, now_ns, now_ns + self.deadline_ns)
        if fault != FAULT_NONE:
            part.result = self._fail(part, fault, now_ns)
        self.parts.append(part)
        return part

    def decide(
        self,
        seq: int,
        passed: bool,
        now_ns: int,
        class_id: int = NO_CLASS,
        confidence: float = 0.0,
        fault: int = FAULT_NONE,
    ) -> bool:
        """The verdict for part ``seq``. False when it came too late (the part already has
        its Fail) or for a part not in flight: it is then dropped and counted."""
        part = self._find(seq)
        if part is None:
            # A part failed at its deadline may already have left the FIFO: still late.
            known = any(p.seq == seq for p in self.parts) or seq in self._timed_out
            self.counts["late" if known else "unknown"] += 1
            return False
        if now_ns > part.deadline_ns:
            part.result = self._fail(part, FAULT_TIMEOUT, now_ns)
            self.counts["late"] += 1
            return False
        part.result = Result(seq, passed, class_id, confidence, fault, part.t_trigger_ns, now_ns)
        return True

    def expired(self, seq: int, now_ns: int) -> bool:
        """Whether a verdict for ``seq`` made now would be too late (or the part failed)."""
        part = self._find(seq)
        return part is None or now_ns > part.deadline_ns

    def poll(self, now_ns: int) -> list[Result]:
        """Fail the parts past their deadline, then pop the results ready at the FIFO head."""
        for part in self.parts:
            if part.result is None and now_ns > part.deadline_ns:
                part.result = self._fail(part, FAULT_TIMEOUT, now_ns)
        out: list[Result] = []
        while self.parts and self.parts[0].result is not None:
            result = self.parts.popleft().result
            assert result is not None
            out.append(result)
            self.counts["results"] += 1
            self.counts["passed" if result.passed else "failed"] += 1
        return out

    def fault(self, code: int, reason: str, now_ns: int) -> None:
        """Enter the fault state: every undecided part fails with ``code`` now, and so does
        every new trigger until :meth:`clear_fault`."""
        if self.fault_code == FAULT_NONE:
            self.fault_code, self.fault_reason = code, reason
        for part in self.parts:
            if part.result is None:
                part.result = self._fail(part, code, now_ns)

    def clear_fault(self) -> None:
        self.fault_code, self.fault_reason = FAULT_NONE, None

    def _fail(self, part: Part, code: int, now_ns: int) -> Result:
        self.counts["timeouts" if code == FAULT_TIMEOUT else "faulted"] += 1
        if code == FAULT_TIMEOUT:
            self._timed_out.append(part.seq)
        return Result(part.seq, False, NO_CLASS, 0.0, code, part.t_trigger_ns, now_ns)
