"""The PLC side of the line: runs the handshake, is the agent's trigger, fans results out.

- Trigger: ``wait(timeout) -> t_ns`` like every trigger. With ``trigger.type`` modbus or
  opcua the PLC triggers through that backend (``on_trigger(seq)``, any thread); otherwise
  the agent's own trigger (gpio, interval) is wrapped and each item gets our number.
- Results: the agent hands in each decision once it is journaled (``deliver``: write-ahead,
  as for the reject pulse); a clock thread fails parts past their deadline and sends every
  result, in trigger order, to each backend (the trigger's own server always answers).
- Records: ``on_part(t_ns, seq)`` is called for every part the station accepts, at its
  trigger (failed-at-once parts included), and ``on_result(result)`` with the result the PLC
  got: when the trigger's backend confirms it (the Modbus server: the PLC's ack), else
  when it is handed to the backends. A result shown but never acked before a stop
  (``ACK_GRACE_S``) reaches ``on_result`` as a Fail, fault stopped, ``delivered`` False.
- Faults: a backend that cannot start raises (trigger source) or raises a fault (sink); a
  trigger link lost mid-run fails every undecided part (``FAULT_LINK``), the safe verdict.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from edge_agent.plc import TRIGGERS, Backend, ConfirmingBackend, make_backend
from edge_agent.plc.handshake import (
    FAULT_LINK,
    FAULT_NAMES,
    FAULT_NONE,
    FAULT_STOPPED,
    FAULT_UNCLASSIFIABLE,
    NO_CLASS,
    Handshake,
    Result,
)
from edge_common.errors import HardwareError

log = logging.getLogger(__name__)

ACK_GRACE_S = 1.0  # at a stop, how long the PLC gets to ack the results still shown


class Station:
    """See the module docstring. ``backends`` may be injected (tests, benchmarks)."""

    def __init__(
        self,
        config: Any,
        labels: list[str],
        inner_trigger: Any = None,
        on_fault: Callable[[str, str], None] | None = None,
        on_clear: Callable[[str], None] | None = None,
        backends: list[Backend] | None = None,
    ) -> None:
        pc = config.plc
        self.labels = list(labels)
        self.hs = Handshake(pc.result_deadline_ms, pc.max_in_flight)
        self.heartbeat_s = pc.heartbeat_ms / 1000
        self.inner = inner_trigger
        self.on_fault = on_fault or (lambda name, msg: None)
        self.on_clear = on_clear or (lambda name: None)
        ttype = config.trigger.type
        if backends is None:
            names = ([ttype] if ttype in TRIGGERS else []) + [
                r for r in config.results if r != ttype
            ]
            backends = [make_backend(n, config) for n in names]
        self.backends = backends
        self.source = backends[0] if ttype in TRIGGERS and backends else None
        self.heartbeat = 0
        self.faults: dict[str, str] = {}
        self._cv = threading.Condition()
        self._items: collections.deque[tuple[int, int]] = collections.deque()  # (t_ns, seq)
        self._seq_of: dict[int, int] = {}
        self._stopping = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.last_latency_ns: list[int] = []  # trigger → result presented (bench_plc)
        self.on_part: Callable[[int, int], Any] | None = None
        self.on_result: Callable[[Result], Any] | None = None
        self.on_write: Callable[[], Any] | None = None
        self._last_t = 0
        self._confirmed = bool(getattr(self.source, "confirms", False))

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> None:
        """Start every backend. The trigger source must start (else ``HardwareError``);
        a sink that cannot start raises a fault and the line goes on without it."""
        for b in self.backends:
            try:
                b.start(self)
            except Exception as err:  # noqa: BLE001
                if b is self.source:
                    self.close()
                    raise HardwareError(f"plc: trigger {b.name} cannot start: {err}") from err
                self.link_fault(b.name, f"cannot start: {err}")
        self._thread = threading.Thread(target=self._clock, name="plc-clock", daemon=True)
        self._thread.start()
        self._push_state()

    def close(self) -> None:
        """Fail every undecided part (``FAULT_STOPPED``), send those results, close links.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._cv:
            self._stopping = True
            self.hs.fault(FAULT_STOPPED, "agent stopping", time.monotonic_ns())
            self._cv.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
            self._thread = None
        self._flush()
        if self._confirmed and self.source is not None:
            source = cast(ConfirmingBackend, self.source)   # _confirmed: it confirms
            for r in source.drain(ACK_GRACE_S):  # shown, never acked: not delivered
                self.undelivered(r)
        for b in self.backends:
            try:
                b.close()
            except Exception:  # noqa: BLE001
                log.exception("plc: closing %s failed", b.name)
        if self.inner is not None:
            self.inner.close()

    # -- the trigger interface -----------------------------------------------------------

    def on_trigger(self, seq: int | None = None) -> int:
        """A part arrived (called by the trigger backend, any thread). Returns its number.
        Its record is queued here (``write_records`` writes it)."""
        with self._cv:
            now = max(time.monotonic_ns(), self._last_t + 1)  # one part, one time
            self._last_t = now
            part = self.hs.trigger(now, seq)
            if self.on_part is not None:  # its record, before its result can exist
                self.on_part(now, part.seq)
            if part.result is None:
                self._items.append((now, part.seq))
            self._cv.notify_all()
        self._push_state()
        return part.seq

    def wait(self, timeout_s: float) -> int | None:
        if self.inner is not None:
            t = self.inner.wait(timeout_s)
            if t is None:
                return None
            with self._cv:
                part = self.hs.trigger(t)
                if self.on_part is not None:
                    self.on_part(t, part.seq)
                self._cv.notify_all()
            if part.result is not None:
                return None  # failed at once (fault, overrun): nothing to inspect
            self._seq_of[t] = part.seq
            return t
        end = time.monotonic() + max(timeout_s, 0.0)
        with self._cv:
            while not self._items:
                left = end - time.monotonic()
                if left <= 0 or self._stopping:
                    return None
                self._cv.wait(left)
            t, seq = self._items.popleft()
        self._seq_of[t] = seq
        return t

    # -- decisions -----------------------------------------------------------------------

    def check(self, t_trigger_ns: int) -> dict[str, Any]:
        """The record's ``plc`` field, decided before the journal commit: the part's number,
        and whether its result deadline has already passed (the PLC got a Fail)."""
        seq = self._seq_of.get(t_trigger_ns, 0)
        with self._cv:
            late = self.hs.expired(seq, time.monotonic_ns())
        return {"seq": seq, "late": late}

    def deliver(self, rec: dict[str, Any]) -> bool:
        """Hand a journaled decision to the handshake (False: too late, the part failed)."""
        seq = self._seq_of.pop(rec.get("t_trigger_ns", -1), None)
        if seq is None:
            return False
        label = rec.get("label")
        class_id = self.labels.index(label) if label in self.labels else NO_CLASS
        fault = FAULT_UNCLASSIFIABLE if rec.get("error") else FAULT_NONE
        with self._cv:
            ok = self.hs.decide(
                seq, rec.get("action") == "pass", time.monotonic_ns(), class_id,
                float(rec.get("score") or 0.0), fault,
            )
            self._cv.notify_all()
        if not ok:
            log.warning("plc: verdict for part %d came after its deadline (Fail sent)", seq)
        return ok

    def decision(self, rec: dict[str, Any]) -> None:
        """A completed record (what the PLC got is in it): to every backend (MQTT)."""
        for b in self.backends:
            b.decision(rec)

    def delivered(self, result: Result) -> None:
        """The trigger's backend confirms the PLC has ``result`` (its ack): the record
        completes (written by the next ``write_records``)."""
        if self.on_result is not None:
            self.on_result(result)

    def write_records(self) -> None:
        """Write the records of what happened so far now, in the calling thread (a server
        backend calls it before it answers a trigger or an ack: not under ``_cv``)."""
        if self.on_write is not None:
            self.on_write()

    def undelivered(self, result: Result) -> None:
        """A result the PLC never confirmed (a stop, an outbox overflow): the part is
        journaled as the Fail the PLC makes of a part without a result."""
        if self.on_result is not None:
            self.on_result(dataclasses.replace(result, passed=False, fault=FAULT_STOPPED,
                                               delivered=False))

    # -- faults --------------------------------------------------------------------------

    def link_fault(self, name: str, message: str) -> None:
        """A backend lost its link. On the trigger's link every undecided part fails."""
        key = f"plc_{name}"
        if self.faults.get(key) != message:
            self.faults[key] = message
            self.on_fault(key, message)
        if self.source is not None and name == self.source.name:
            with self._cv:
                self.hs.fault(FAULT_LINK, message, time.monotonic_ns())
                self._cv.notify_all()

    def link_ok(self, name: str) -> None:
        key = f"plc_{name}"
        if self.faults.pop(key, None) is not None:
            self.on_clear(key)
            if self.source is not None and name == self.source.name:
                with self._cv:
                    self.hs.clear_fault()

    # -- state ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._cv:
            code = self.hs.fault_code
            return {
                "heartbeat": self.heartbeat,
                "ready": self.hs.ready and not self._stopping,
                "busy": self.hs.busy,
                "in_flight": self.hs.in_flight,
                "fault": code,
                "fault_name": FAULT_NAMES.get(code, str(code)),
            }

    def snapshot(self) -> dict[str, Any]:
        """The ``plc`` part of the agent's status."""
        with self._cv:
            counts = dict(self.hs.counts)
        return {**self.state(), "counts": counts, "backends": [b.name for b in self.backends]}

    def _push_state(self) -> None:
        st = self.state()
        for b in self.backends:
            b.state(st)

    def _clock(self) -> None:
        next_beat = time.monotonic() + self.heartbeat_s
        while True:
            with self._cv:
                if self._stopping:
                    return
                due = self.hs.next_deadline_ns()
                wait = next_beat - time.monotonic()
                if due is not None:
                    wait = min(wait, (due - time.monotonic_ns()) / 1e9 + 0.0002)
                results = self.hs.poll(time.monotonic_ns())
                if not results and wait > 0:
                    self._cv.wait(wait)
                    results = self.hs.poll(time.monotonic_ns())
            self._send(results)
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.heartbeat_s
                self.heartbeat = (self.heartbeat + 1) % 65536
                self._push_state()

    def _flush(self) -> None:
        with self._cv:
            results = self.hs.poll(time.monotonic_ns())
        self._send(results)

    def _send(self, results: list[Result]) -> None:
        if not results:
            return
        for r in results:
            for b in self.backends:
                try:
                    b.result(r)
                except Exception:  # noqa: BLE001 - one link never stops the others
                    log.exception("plc: %s could not take result %d", b.name, r.seq)
            if not self._confirmed and self.on_result is not None:
                self.on_result(r)
            if r.t_trigger_ns:
                self.last_latency_ns.append(time.monotonic_ns() - r.t_trigger_ns)
                del self.last_latency_ns[:-10000]
        self._push_state()
