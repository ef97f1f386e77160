"""How the fleet pages are rendered: the Jinja2 templates, their filters, the headers
every page carries (a strict Content-Security-Policy: no inline script, nothing loaded
from elsewhere). The number filters show "–" for a value that is not a finite number."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from edgectl.collector.values import number
from edgectl.collector.web.session import csrf_token

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
UPLOT = "vendor/uplot-1.6.32"
# Pages load only their own scripts and styles: no inline script, nothing from elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self'; script-src 'self'; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _ago(seconds: Any) -> str:
    s = number(seconds)
    if s is None:
        return "never"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.0f} d"


def _utc(ts: Any) -> str:
    t = number(ts)
    if t is None:
        return "–"
    try:
        return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):  # a time no calendar holds
        return "–"


def _pct(v: Any, digits: int = 1) -> str:
    f = number(v)
    return "–" if f is None else f"{100.0 * f:.{digits}f} %"


def _num(v: Any, digits: int = 1) -> str:
    f = number(v)
    return "–" if f is None else f"{f:.{digits}f}"


def _size(v: Any) -> str:
    n = number(v)
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


templates.env.filters.update(ago=_ago, utc=_utc, pct=_pct, num=_num, size=_size)


def render(request: Request, template: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    ctx.setdefault("csrf", csrf_token(request))
    ctx.setdefault("uplot", UPLOT)
    resp = templates.TemplateResponse(request, template, ctx, status_code=status_code)
    resp.headers.update(SECURITY_HEADERS)
    return resp


