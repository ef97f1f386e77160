"""Reading stored values defensively: what a page, a status row or a scrape shows of what
a board once sent. Rows stored before the strict schemas (``api/schemas.py``) may hold
anything JSON can: a value that is not what the reader expects is None (shown as "–"),
never an exception."""

from __future__ import annotations

import json
import math
from typing import Any


def number(v: Any, text: bool = False) -> float | None:
    """``v`` as a finite float; None for anything else (a bool, a string, NaN, a list).
    ``text``: a numeric string counts too (what SQL JSON functions return on PostgreSQL)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        f = float(v) if not isinstance(v, int) or abs(v) < 2**1023 else math.inf
    elif text and isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def count(v: Any) -> int | None:
    """``v`` as a non-negative integer (an integral float counts); None otherwise."""
    f = number(v)
    return int(f) if f is not None and f >= 0 and f == int(f) else None


def text(v: Any, limit: int = 4096) -> str | None:
    """``v`` if it is a string (cut at ``limit``), else None."""
    return v[:limit] if isinstance(v, str) else None


def obj(v: Any) -> dict[str, Any]:
    """``v`` if it is a JSON object, else an empty one."""
    return v if isinstance(v, dict) else {}


def loads(body: str) -> Any:
    """A stored JSON text; NaN and ±Infinity (which older collectors stored) read as null,
    so the answer can be sent as JSON again."""
    return json.loads(body, parse_constant=lambda _: None)
