"""One root error for the whole product; leaves also inherit the matching built-in.

Modelled on gpiozero's ``exc.py``: callers can catch ``EdgeError`` for "anything of
ours" or the built-in (``ValueError``, ``FileNotFoundError``...) they already expect.
The CLIs print ``str(err)`` as one red line and exit non-zero.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Root of every error edgectl and edge-agent raise on purpose."""


class ConfigError(EdgeError, ValueError):
    """A configuration file or option is invalid (the message names the key path)."""


class DataError(EdgeError, ValueError):
    """A data spec, folder or image cannot be used."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data folder or file does not exist."""


class ModelError(EdgeError, ValueError):
    """A checkpoint or model file is missing, not ours, or inconsistent."""


class BundleError(EdgeError, ValueError):
    """A model bundle is malformed or fails verification."""


class IntegrityError(BundleError):
    """A bundle's checksum or signature does not match."""


class ParityError(EdgeError, RuntimeError):
    """An exported artifact does not reproduce the reference model's outputs."""


class HardwareError(EdgeError, RuntimeError):
    """A camera, pin or accelerator cannot be used (often: an optional extra is missing)."""


# The extras of the host's distribution (host/pyproject.toml); every other extra belongs to
# the board's distribution, edge-agent (pyproject.toml). tests/common/test_packaging.py
# holds this list to the two files.
HOST_EXTRAS = frozenset({"host", "tflite-export", "dev"})


def distribution_of(extra: str) -> str:
    """The distribution that declares ``extra``: ``edgectl`` (host) or ``edge-agent``."""
    return "edgectl" if extra in HOST_EXTRAS else "edge-agent"


class MissingExtraError(HardwareError, ImportError):
    """An optional library is not installed; the message names the extra to install."""

    def __init__(self, library: str, extra: str, hint: str = "") -> None:
        msg = f"{library} is not installed: pip install '{distribution_of(extra)}[{extra}]'"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)
        self.library = library
        self.extra = extra


def one_line(err: BaseException, limit: int = 300) -> str:
    """``err`` as one short line: its type when the message is empty, the first line of a
    long native message (onnxruntime's run a few dozen lines), at most ``limit`` chars."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
