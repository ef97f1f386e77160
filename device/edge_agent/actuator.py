"""The reject actuator: a gpiozero output pulsed ``delay_ms`` after the item's trigger.

Wiring: ``pin`` (BCM numbering unless named) drives the input of an opto-isolated relay or
MOSFET driver board that switches the air valve or pusher solenoid — never the coil
straight from the pin. ``active_high=True``: pin high = actuator on. Units: ``delay_ms`` is
the conveyor's travel time from the trigger sensor to the rejector, ``pulse_ms`` how long
the actuator stays on; both in milliseconds, measured from the trigger's timestamp.

Scheduling: one scheduler thread with a heap of (time, on/off) events, not one
``threading.Timer`` per pulse: Timers start two threads per item (start-up jitter of
a thread is itself milliseconds on a Pi, and a burst of items means a burst of threads),
and stopping safely would mean cancelling every pending Timer. One thread keeps events
ordered, lets several items be in flight, merges overlapping pulses, and gives one place
that forces the safe state on stop. A decision that arrives after its pulse should
have started is not actuated: it is counted as a deadline miss.

Safe state: the pin is driven to ``safe_on`` (``actuator.safe_state``; off by default) the
moment the device opens (gpiozero's ``initial_value``), on every fault and on stop; the
line idles off while the agent inspects (``arm``). ``drive_safe`` is the same for a
process that holds nothing else: ``edge-agent safe-state``, the unit's ``ExecStopPost=``,
which covers SIGKILL, SIGABRT and SIGSEGV, where no code of ours runs.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edge_agent.pins import gpiozero
from edge_common.errors import HardwareError

log = logging.getLogger(__name__)

ON, OFF = 1, 0
# A pulse that goes active more than this after it was due is counted late (it may hit
# the part's trailing edge or the next part): the scheduler thread was starved.
LATE_MS = 10.0


class Actuator:
    """Pulses a ``gpiozero.DigitalOutputDevice`` for ``pulse_ms`` at trigger + ``delay_ms``."""

    def __init__(
        self,
        pin: int | str | None,
        delay_ms: float,
        pulse_ms: float,
        active_high: bool = True,
        pin_factory: Any = None,
        on_fire: Callable[[int, int], None] | None = None,
        safe_on: bool = False,
        on_done: Callable[[list[tuple[Any, str]]], None] | None = None,
        late_ms: float = LATE_MS,
    ) -> None:
        self.delay_ns = int(delay_ms * 1e6)
        self.pulse_ns = int(pulse_ms * 1e6)
        self.late_ns = int(late_ms * 1e6)
        self.on_fire = on_fire
        # Called with (tag, outcome) of every tagged pulse once it is over: ``done`` (the
        # output went active and back), ``late`` (the same, but it went active more than
        # ``late_ms`` after it was due), ``dropped`` (it never went active: a stop or a
        # fault drove the output safe first).
        self.on_done = on_done
        self.safe_on = bool(safe_on)
        self.device: Any = open_output(pin, active_high, safe_on, pin_factory)
        self.pulses = 0  # pulses whose output actually went active
        self.scheduled = 0
        self.late = 0
        self.dropped = 0
        self.misses = 0
        self._fired: dict[Any, bool] = {}  # tag -> went active late
        # Set when the scheduler thread died: the output was driven safe, no pulse can fire
        # any more, and ``on_fault`` (the agent) was told, so no part is passed as OK.
        self.failed: str | None = None
        self.on_fault: Callable[[str], None] | None = None
        # (t_ns, seq, ON/OFF, t_trigger_ns, tag)
        self._heap: list[tuple[int, int, int, int, Any]] = []
        self._seq = 0
        self._active = 0
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="actuator", daemon=True)
        self._thread.start()

    def arm(self) -> None:
        """Leave the safe level for the running idle level (off); the line inspects now."""
        with self._cv:
            if self.device is not None and not self._stopping and self._active == 0:
                self.device.off()

    def schedule(self, t_trigger_ns: int, now_ns: int | None = None, tag: Any = None) -> bool:
        """Schedule one reject pulse for the item triggered at ``t_trigger_ns``.

        Returns False (and counts a deadline miss) when the pulse should already have
        started: a late rejection would hit the wrong item. ``tag`` (the journal id) is
        handed to ``on_done`` once the pulse has ended or was dropped by a safe state.
        """
        now = time.monotonic_ns() if now_ns is None else now_ns
        start = t_trigger_ns + self.delay_ns
        if now > start or self.failed is not None:
            with self._cv:
                self.misses += 1
            return False
        with self._cv:
            if self._stopping:
                return False
            self._push(start, ON, t_trigger_ns, tag)
            self._push(start + self.pulse_ns, OFF, t_trigger_ns, tag)
            self.scheduled += 1
            self._cv.notify()
        return True

    def deadline_ok(self, t_trigger_ns: int, now_ns: int | None = None) -> bool:
        """Whether a decision made now is still in time for the item's pulse."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        return now <= t_trigger_ns + self.delay_ns

    def _push(self, t: int, kind: int, trig: int, tag: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, trig, tag))

    def _run(self) -> None:
        """The scheduler thread. It cannot die silently: whatever ends it (a bug, an
        overflow, a pin library raising something new) drives the output safe, marks the
        actuator failed and tells the agent, which stops taking parts as OK."""
        try:
            self._schedule_loop()
        except BaseException as err:  # noqa: BLE001 - the output must end safe
            reason = f"actuator thread died: {type(err).__name__}: {err}"
            log.critical("%s; output driven to its safe level", reason)
            with self._cv:
                self.failed = reason
                self._safe_locked()
            if self.on_fault is not None:
                try:
                    self.on_fault(reason)
                except Exception:  # noqa: BLE001
                    log.exception("actuator: on_fault callback failed")

    def _schedule_loop(self) -> None:
        with self._cv:
            while not self._stopping:
                if not self._heap:
                    self._cv.wait()
                    continue
                t, _, kind, trig, tag = self._heap[0]
                wait_ns = t - time.monotonic_ns()
                if wait_ns > 0:
                    self._cv.wait(wait_ns / 1e9)
                    continue
                heapq.heappop(self._heap)
                try:
                    self._apply(kind, t, trig, tag)
                except Exception:  # noqa: BLE001 - never let the pin stay on
                    log.exception("actuator: pin write failed; forcing safe state")
                    self._safe_locked()
                    continue
                if kind == OFF and tag is not None:
                    late = self._fired.pop(tag, False)
                    self._done([(tag, "late" if late else "done")])

    def _done(self, outcomes: list[tuple[Any, str]]) -> None:
        if self.on_done is not None and outcomes:
            try:
                self.on_done(outcomes)
            except Exception:  # noqa: BLE001
                log.exception("actuator: on_done callback failed")

    def _apply(self, kind: int, t_due: int, trig: int, tag: Any) -> None:
        if kind == ON:
            now = time.monotonic_ns()
            self._active += 1
            if self._active == 1 and self.device is not None:
                self.device.on()
            self.pulses += 1
            late = now - t_due > self.late_ns  # checked when it fires, not when scheduled
            if late:
                self.late += 1
            if tag is not None:
                self._fired[tag] = late
            if self.on_fire is not None:
                self.on_fire(trig, now)
        else:
            self._active = max(0, self._active - 1)
            if self._active == 0 and self.device is not None:
                self.device.off()

    def _safe_locked(self) -> None:
        outcomes = []
        for e in self._heap:
            tag = e[4]
            if e[2] != OFF or tag is None:
                continue
            if tag in self._fired:  # it went active; the safe level ends it early
                outcomes.append((tag, "late" if self._fired.pop(tag) else "done"))
            else:
                outcomes.append((tag, "dropped"))
                self.dropped += 1
        self._heap.clear()
        self._active = 0
        if self.device is not None:
            try:
                self.device.value = self.safe_on
            except Exception:  # noqa: BLE001
                log.exception("actuator: cannot drive the pin to its safe state")
        self._done(outcomes)

    def safe(self) -> None:
        """Drop every pending pulse and drive the safe level now (on faults)."""
        with self._cv:
            self._safe_locked()
            self._cv.notify()

    @property
    def in_flight(self) -> int:
        with self._cv:
            return sum(1 for e in self._heap if e[2] == ON) + self._active

    def stop(self) -> None:
        """Safe state, stop the scheduler thread, release the pin. Idempotent."""
        with self._cv:
            self._stopping = True
            self._safe_locked()
            self._cv.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)
        if self.device is not None:
            try:
                self.device.value = self.safe_on
                self.device.close()
            except Exception:  # noqa: BLE001
                log.exception("actuator: close failed")
            self.device = None


def open_output(
    pin: int | str | None, active_high: bool, safe_on: bool, pin_factory: Any
) -> Any:
    """The output device, driven to its safe level as it opens (``None`` when no pin)."""
    if pin is None:
        return None
    gz = gpiozero()
    try:
        # initial_value: gpiozero sets the line's level as it claims it, no glitch first.
        return gz.DigitalOutputDevice(
            pin, active_high=active_high, initial_value=safe_on, pin_factory=pin_factory
        )
    except Exception as err:  # noqa: BLE001
        raise HardwareError(f"actuator: cannot use pin {pin!r}: {err}") from err


def drive_safe(pin: int | str, active_high: bool, safe_on: bool, pin_factory: Any) -> None:
    """Claim ``pin``, drive it to the safe level and release it (``edge-agent safe-state``).

    A released line keeps its last level on many boards, so the level is driven actively,
    not left to whatever the kernel does when the dead process's handle goes away.
    """
    device = open_output(pin, active_high, safe_on, pin_factory)
    try:
        device.value = safe_on
    finally:
        device.close()
