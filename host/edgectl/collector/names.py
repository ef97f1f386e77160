"""Safe names: every device name, record id and bundle version that reaches a path or a
table goes through here first, so ``../`` or ``/`` can never select a file."""

from __future__ import annotations

import re
from typing import TypeGuard

# Starts with a letter or digit, then letters, digits, dot, dash, underscore: no "/",
# no "..", no leading dot or dash (hidden files, options), no empty name.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_safe_name(value: object) -> TypeGuard[str]:
    """True when ``value`` can be used as one path component and a key."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None and ".." not in value


def check_name(value: object, what: str) -> str:
    """Return ``value`` or raise ``ValueError`` naming ``what``."""
    if not is_safe_name(value):
        raise ValueError(
            f"invalid {what} {value!r}: use 1-128 letters, digits, '.', '-', '_' "
            "starting with a letter or digit"
        )
    return value
