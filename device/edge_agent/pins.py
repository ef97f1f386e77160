"""gpiozero pin factories by name (``mock`` for laptops and tests; ``None`` = gpiozero's
default, which honours ``GPIOZERO_PIN_FACTORY``). gpiozero is used directly, not wrapped:
devices take ``pin_factory=`` and tests drive ``MockFactory`` pins."""

from __future__ import annotations

from typing import Any

from edge_common.errors import HardwareError, MissingExtraError


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
