"""The body of a decision batch, parsed once: the records, and each record's JSON text as
the board sent it.

The store keeps a record's text as its ``body``; slicing it out of the request while
parsing costs next to nothing, where ``json.dumps`` of every record again was the largest
per-record cost of the collector in Python (profiled on batches of 200). The slices come
from the same C scanner that ``json.loads`` uses (``JSONDecoder.scan_once``), walked over
the top-level object and the ``records`` array by hand; anything unusual (another
encoding, a byte-order mark, an error) goes through ``json.loads`` as before, without
texts, and the store serialises those records itself. Either way the batch is validated
by the strict ``DecisionBatch`` before anything reaches the store.
"""

from __future__ import annotations

import json
from json.decoder import WHITESPACE  # type: ignore[attr-defined]  # CPython's, not in typeshed
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from edgectl.collector.api.errors import UNPARSABLE
from edgectl.collector.api.schemas import DecisionBatch

# (text, index) -> (value, end); StopIteration. Set in JSONDecoder.__init__; typeshed
# leaves the attribute out.
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_ws = WHITESPACE.match


def parse_batch(body: bytes) -> tuple[DecisionBatch, list[dict[str, Any]], list[str] | None]:
    """The batch (validated: ``DecisionBatch``), its records as parsed (plain dicts, the
    values the model checked), and the JSON text of each record (None when not available);
    errors as FastAPI reports them: 422 naming the field, 400 if undecodable."""
    parsed = None
    try:
        parsed = split(body.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    texts = None
    if parsed is not None:
        obj, texts = parsed
    else:
        try:
            obj = json.loads(body)
        except json.JSONDecodeError as err:
            raise RequestValidationError([{"type": "json_invalid", "loc": ("body", err.pos),
                                           "msg": "JSON decode error", "input": {},
                                           "ctx": {"error": err.msg}}], body=err.doc) from err
        except (ValueError, RecursionError) as err:  # not UTF-8/16/32, too deep, too long
            raise HTTPException(400, UNPARSABLE) from err
    try:
        batch = DecisionBatch.model_validate(obj)
    except ValidationError as err:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in err.errors(include_url=False)],
            body=None) from err
    return batch, obj["records"], texts


def split(text: str) -> tuple[Any, list[str] | None] | None:
    """``json.loads(text)`` for a JSON object, with the source text of each element of its
    ``records`` array (None if ``records`` is not an array); None for anything else,
    including invalid JSON (the caller then asks ``json.loads`` for the error)."""
    try:
        return _split(text)
    except (StopIteration, ValueError, RecursionError):
        return None


def _split(text: str) -> tuple[Any, list[str] | None] | None:
    i = _ws(text, 0).end()
    if text[i:i + 1] != "{":
        return None
    i = _ws(text, i + 1).end()
    obj: dict[str, Any] = {}
    texts: list[str] | None = None
    if text[i:i + 1] == "}":
        i += 1
    else:
        while True:
            if text[i:i + 1] != '"':
                return None
            key, i = _scan(text, i)
            i = _ws(text, i).end()
            if text[i:i + 1] != ":":
                return None
            i = _ws(text, i + 1).end()
            if key == "records" and text[i:i + 1] == "[":
                value, texts, i = _array(text, i)
            else:
                value, i = _scan(text, i)
                if key == "records":
                    texts = None    # the last "records" wins, as in json.loads
            obj[key] = value
            i = _ws(text, i).end()
            c, i = text[i:i + 1], i + 1
            if c == "}":
                break
            if c != ",":
                return None
            i = _ws(text, i).end()
    if _ws(text, i).end() != len(text):
        return None
    return obj, texts


def _array(text: str, i: int) -> tuple[list[Any], list[str], int]:
    """The array starting at ``text[i] == "["``: its values, their texts, the end."""
    values: list[Any] = []
    texts: list[str] = []
    i = _ws(text, i + 1).end()
    if text[i:i + 1] == "]":
        return values, texts, i + 1
    while True:
        start = i
        value, i = _scan(text, i)
        values.append(value)
        texts.append(text[start:i])
        i = _ws(text, i).end()
        c, i = text[i:i + 1], i + 1
        if c == "]":
            return values, texts, i
        if c != ",":
            raise ValueError("not a JSON array")
        i = _ws(text, i).end()
