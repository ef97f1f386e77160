"""422 bodies that name the field and never echo the input.

FastAPI's default 422 repeats each offending value back (``input``); a NaN there made
the JSON answer itself fail (a 500), and a 4 MiB body came back whole. Here each error
is ``{"field": "body.counts.total", "loc": [...], "msg": ..., "type": ...}``; a body that
cannot be parsed at all is the same, naming ``body``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

UNPARSABLE = "There was an error parsing the body"  # FastAPI's and ``batch_body``'s 400


def invalid(loc: tuple[str | int, ...], msg: str) -> RequestValidationError:
    """A 422 naming ``loc`` (``("body",)`` for a raw body), for checks pydantic does not
    make: ``raise invalid(("body",), "not a bundle tar")``."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg}])


def describe(errors: Any) -> list[dict[str, Any]]:
    """``errors()`` of a validation error as safe JSON: field, loc, msg, type."""
    out = []
    for e in errors:
        loc = [p if isinstance(p, int) else str(p)[:128] for p in e.get("loc", ())]
        out.append({"field": ".".join(str(p) for p in loc), "loc": loc,
                    "msg": str(e.get("msg", ""))[:512], "type": str(e.get("type", ""))})
    return out


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": describe(exc.errors())}, status_code=422)


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's own answer, except a body it could not parse at all (not UTF-8, nested
    past the JSON parser's recursion limit): 422 naming ``body`` like any other bad body."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.detail == UNPARSABLE:
        return JSONResponse({"detail": [{
            "field": "body", "loc": ["body"], "type": "json_invalid",
            "msg": "the body cannot be read as JSON (not UTF-8, or nested too deep)"}]},
            status_code=422)
    return await http_exception_handler(request, exc)
