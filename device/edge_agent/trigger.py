"""What starts one capture: a beam-break sensor on a GPIO input, or a fixed interval.

``wait(timeout_s) -> t_ns | None`` returns the trigger time (``time.monotonic_ns()``)
of the next item, or ``None`` if none came within ``timeout_s`` (the loop then pings the
watchdog and waits again).
"""

from __future__ import annotations

import logging
import queue
import time
from typing import TYPE_CHECKING, Any, Protocol

from edge_agent.pins import gpiozero
from edge_common.errors import HardwareError

if TYPE_CHECKING:
    from edge_agent.config import TriggerConfig

log = logging.getLogger(__name__)


class Trigger(Protocol):
    def wait(self, timeout_s: float) -> int | None: ...

    def close(self) -> None: ...


class IntervalTrigger:
    """Free-running trigger at ``rate_hz`` items per second (0: as fast as the loop runs).

    Ticks are scheduled on a fixed grid; when the loop falls behind, missed ticks are
    dropped rather than fired in a burst.
    """

    def __init__(self, rate_hz: float) -> None:
        self.period_ns = int(1e9 / rate_hz) if rate_hz > 0 else 0
        self._next = time.monotonic_ns()

    def wait(self, timeout_s: float) -> int | None:
        now = time.monotonic_ns()
        if self.period_ns == 0:
            return now
        if now < self._next:
            sleep_ns = self._next - now
            if sleep_ns > timeout_s * 1e9:
                time.sleep(timeout_s)
                return None
            time.sleep(sleep_ns / 1e9)
            now = time.monotonic_ns()
        self._next += self.period_ns
        if self._next < now:  # behind schedule: skip, don't burst
            self._next = now + self.period_ns
        return now

    def close(self) -> None:
        pass


class GpioTrigger:
    """An item sensor (beam-break / photo-eye) on a GPIO input: one capture per item.

    Wiring: the sensor's output to ``pin`` (BCM numbering unless named, e.g. ``BOARD11``)
    and its ground to a GND pin. ``pull="up"`` suits open-collector outputs (the input
    is active when pulled low); ``"down"``: active high; ``"floating"``: the sensor drives
    the line and ``active_high`` says which level means "item present". ``bounce_ms``
    ignores edges closer together than that. The item is stamped in gpiozero's edge
    callback and queued, so the loop never misses an item while it is busy.
    """

    def __init__(self, cfg: TriggerConfig, pin_factory: Any = None) -> None:
        gz = gpiozero()
        pull_up: bool | None = {"up": True, "down": False, "floating": None}[cfg.pull]
        try:
            self.device = gz.DigitalInputDevice(
                cfg.pin,
                pull_up=pull_up,
                active_state=cfg.active_high if pull_up is None else None,
                bounce_time=cfg.bounce_ms / 1000 if cfg.bounce_ms else None,
                pin_factory=pin_factory,
            )
        except Exception as err:  # noqa: BLE001 - gpiozero's errors vary by factory
            raise HardwareError(f"trigger: cannot use pin {cfg.pin!r}: {err}") from err
        self._items: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.count = 0
        self.device.when_activated = self._on_item

    def _on_item(self) -> None:
        self._items.put(time.monotonic_ns())
        self.count += 1

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self._items.get(timeout=max(timeout_s, 0.0))
        except queue.Empty:
            return None

    def close(self) -> None:
        self.device.when_activated = None
        self.device.close()


def make_trigger(cfg: TriggerConfig, pin_factory: Any = None) -> Trigger:
    if cfg.type == "gpio":
        return GpioTrigger(cfg, pin_factory)
    return IntervalTrigger(cfg.rate_hz)
