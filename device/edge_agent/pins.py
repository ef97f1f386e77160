"""gpiozero pin factories by name (``mock`` for laptops and tests; ``None`` = gpiozero's
default, which honours ``GPIOZERO_PIN_FACTORY``). gpiozero is used directly, not wrapped:
devices take ``pin_factory=`` and tests drive ``MockFactory`` pins.

``file`` is a stand-in for a GPIO line that outlives the process: gpiozero's
``MockFactory`` with pins whose level is also kept in ``$EDGE_PIN_STATE_DIR/<pin>`` (``0``
or ``1``) and appended to ``<pin>.log`` (``<CLOCK_MONOTONIC ns> <level>`` per change).
Like a real line on many boards, a pin released or abandoned (the process killed) keeps
its last level until someone drives it. Tests, ``benchmarks/bench_faults.py`` and the
simulated station use it to observe the reject output across processes (kill the agent,
run ``edge-agent safe-state``, read the level). It drives nothing physical.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from edge_common.errors import ConfigError, HardwareError, MissingExtraError


def gpiozero() -> Any:
    try:
        import gpiozero as gz
    except ImportError as err:
        raise MissingExtraError("gpiozero", "device") from err
    return gz


def make_pin_factory(name: str | None) -> Any:
    """A new pin factory instance for ``name`` (``None`` → gpiozero's default factory)."""
    gpiozero()
    if name is None:
        return None
    try:
        if name == "mock":
            from gpiozero.pins.mock import MockFactory

            return MockFactory()
        if name == "file":
            return file_pin_factory()
        if name == "lgpio":
            from gpiozero.pins.lgpio import LGPIOFactory

            return LGPIOFactory()
        if name == "rpigpio":
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            return RPiGPIOFactory()
        if name == "pigpio":
            from gpiozero.pins.pigpio import PiGPIOFactory

            return PiGPIOFactory()
        if name == "native":
            from gpiozero.pins.native import NativeFactory

            return NativeFactory()
    except ImportError as err:
        raise MissingExtraError(name, "pi", f"the {name} pin library is not installed") from err
    except Exception as err:  # noqa: BLE001 - gpiozero raises many kinds when no GPIO exists
        raise HardwareError(f"gpio: pin factory {name!r} unavailable: {err}") from err
    raise HardwareError(f"gpio: unknown pin factory {name!r}")


PIN_STATE_ENV = "EDGE_PIN_STATE_DIR"


class PinFactories:
    """The process's pin factories by name, each made once (a factory owns its lines, and
    gpiozero wants one per process); an injected ``override`` (tests, a bench) serves every
    name."""

    def __init__(self, override: Any = None) -> None:
        self.override = override
        self._made: dict[str | None, Any] = {}

    def get(self, name: str | None) -> Any:
        if self.override is not None:
            return self.override
        if name not in self._made:
            self._made[name] = make_pin_factory(name)
        return self._made[name]


def file_pin_factory(state_dir: str | os.PathLike[str] | None = None) -> Any:
    """A ``MockFactory`` whose pins keep their level in files (see the module docstring)."""
    from gpiozero.pins.mock import MockFactory, MockPin

    where = state_dir or os.environ.get(PIN_STATE_ENV)
    if not where:
        raise HardwareError(f"gpio: the file pin factory needs ${PIN_STATE_ENV} (a folder)")
    root = Path(where)
    root.mkdir(parents=True, exist_ok=True)

    class FilePin(MockPin):
        def __init__(self, factory: Any, info: Any) -> None:
            self._file = root / info.name
            self._released = False
            super().__init__(factory, info)
            level = read_pin_level(root, info.name)
            if level is not None:
                self._state = level  # the line's level as the last holder left it

        def close(self) -> None:
            # A released line keeps its level (as lgpio/sysfs lines do on many boards).
            self._released = True
            super().close()

        def _change_state(self, value: bool) -> bool:
            if self._released:
                return False
            changed = bool(super()._change_state(value))
            if changed and self._function == "output":
                tmp = self._file.with_name(f".{self._file.name}.{os.getpid()}")
                tmp.write_text("1" if value else "0")
                os.replace(tmp, self._file)
                with open(self._file.with_name(self._file.name + ".log"), "a") as fh:
                    fh.write(f"{time.monotonic_ns()} {int(value)}\n")
            return changed

    return MockFactory(pin_class=FilePin)


def read_pin_level(state_dir: str | os.PathLike[str], pin: str) -> bool | None:
    """The level a ``file`` pin was last driven to (``None``: never driven)."""
    try:
        text = (Path(state_dir) / pin).read_text().strip()
    except FileNotFoundError:
        return None
    return text == "1"


def read_pin_log(state_dir: str | os.PathLike[str], pin: str) -> list[tuple[int, bool]]:
    """Every change of a ``file`` pin: ``(CLOCK_MONOTONIC ns, level)``, oldest first."""
    try:
        lines = (Path(state_dir) / f"{pin}.log").read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        t, _, v = line.partition(" ")
        if v in ("0", "1"):  # a line torn by a kill is skipped
            out.append((int(t), v == "1"))
    return out


def gpio_number(pin: int | str, key: str = "pin") -> int:
    """The BCM GPIO number a pin setting names, as gpiozero resolves it on a Raspberry Pi's
    40-pin header (``17``, ``"GPIO17"``, ``"BCM17"``, ``"BOARD11"``, ``"J8:11"`` are one
    pin); anything gpiozero would refuse at ``run`` is refused here, naming the key.
    gpiozero's own board table is asked (a mock Pi 3B: the 40-pin header every Pi since
    the B+ shares), so ``validate-config`` and ``run`` cannot disagree."""
    text = pin if isinstance(pin, str) else None
    if isinstance(pin, int) and not isinstance(pin, bool):
        if not 0 <= pin <= 27:
            raise ConfigError(f"config: {key}: GPIO {pin} is not on the board's header "
                              "(BCM 0..27)")
        return pin
    try:
        from gpiozero.pins.mock import MockFactory

        board = MockFactory().board_info
    except ImportError:  # gpiozero is a device dependency; without it: the plain forms
        m = re.fullmatch(r"(?:GPIO|BCM)?([0-9]{1,2})", text or "")
        if m is None or int(m.group(1)) > 27:
            raise ConfigError(f"config: {key}: {pin!r} is not a GPIO pin name "
                              "(e.g. 17, GPIO17, BOARD11)") from None
        return int(m.group(1))
    try:
        name = board.to_gpio(text)
    except Exception:  # noqa: BLE001 - gpiozero's PinInvalidPin and friends
        raise ConfigError(f"config: {key}: {pin!r} is not a GPIO pin of the board's header "
                          "(e.g. 17, GPIO17, BOARD11)") from None
    return int(str(name).removeprefix("GPIO"))
