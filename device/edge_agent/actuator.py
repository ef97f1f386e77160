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
that forces the safe state (off) on stop. A decision that arrives after its pulse should
have started is not actuated: it is counted as a deadline miss.
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
    ) -> None:
        self.delay_ns = int(delay_ms * 1e6)
        self.pulse_ns = int(pulse_ms * 1e6)
        self.on_fire = on_fire
        self.device: Any = None
        if pin is not None:
            gz = gpiozero()
            try:
                self.device = gz.DigitalOutputDevice(
                    pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
                )
            except Exception as err:  # noqa: BLE001
                raise HardwareError(f"actuator: cannot use pin {pin!r}: {err}") from err
        self.pulses = 0
        self.misses = 0
        self._heap: list[tuple[int, int, int, int]] = []  # (t_ns, seq, ON/OFF, t_trigger_ns)
        self._seq = 0
        self._active = 0
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="actuator", daemon=True)
        self._thread.start()

    def schedule(self, t_trigger_ns: int, now_ns: int | None = None) -> bool:
        """Schedule one reject pulse for the item triggered at ``t_trigger_ns``.

        Returns False (and counts a deadline miss) when the pulse should already have
        started: a late rejection would hit the wrong item.
        """
        now = time.monotonic_ns() if now_ns is None else now_ns
        start = t_trigger_ns + self.delay_ns
        if now > start:
            with self._cv:
                self.misses += 1
            return False
        with self._cv:
            if self._stopping:
                return False
            self._push(start, ON, t_trigger_ns)
            self._push(start + self.pulse_ns, OFF, t_trigger_ns)
            self.pulses += 1
            self._cv.notify()
        return True

    def deadline_ok(self, t_trigger_ns: int, now_ns: int | None = None) -> bool:
        """Whether a decision made now is still in time for the item's pulse."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        return now <= t_trigger_ns + self.delay_ns

    def _push(self, t: int, kind: int, trig: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, trig))

    def _run(self) -> None:
        with self._cv:
            while not self._stopping:
                if not self._heap:
                    self._cv.wait()
                    continue
                t, _, kind, trig = self._heap[0]
                wait_ns = t - time.monotonic_ns()
                if wait_ns > 0:
                    self._cv.wait(wait_ns / 1e9)
                    continue
                heapq.heappop(self._heap)
                try:
                    self._apply(kind, trig)
                except Exception:  # noqa: BLE001 - never let the pin stay on
                    log.exception("actuator: pin write failed; forcing safe state")
                    self._safe_locked()

    def _apply(self, kind: int, trig: int) -> None:
        if kind == ON:
            self._active += 1
            if self._active == 1 and self.device is not None:
                self.device.on()
            if self.on_fire is not None:
                self.on_fire(trig, time.monotonic_ns())
        else:
            self._active = max(0, self._active - 1)
            if self._active == 0 and self.device is not None:
                self.device.off()

    def _safe_locked(self) -> None:
        self._heap.clear()
        self._active = 0
        if self.device is not None:
            try:
                self.device.off()
            except Exception:  # noqa: BLE001
                log.exception("actuator: cannot drive the pin to its safe state")

    def safe(self) -> None:
        """Drop every pending pulse and switch the actuator off now (on faults)."""
        with self._cv:
            self._safe_locked()
            self._cv.notify()

    @property
    def in_flight(self) -> int:
        with self._cv:
            return sum(1 for e in self._heap if e[2] == ON) + self._active

    def stop(self) -> None:
        """Safe state (off), stop the scheduler thread, release the pin. Idempotent."""
        with self._cv:
            self._stopping = True
            self._safe_locked()
            self._cv.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)
        if self.device is not None:
            try:
                self.device.off()
                self.device.close()
            except Exception:  # noqa: BLE001
                log.exception("actuator: close failed")
            self.device = None
