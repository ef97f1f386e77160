"""The bounded value types every request body is built from (pydantic v2).

Every number is finite (NaN and Infinity refused), every string is bounded and holds no
NUL or unpaired surrogate (neither survives PostgreSQL's text or JSON types), every list
and map is bounded, and free-form JSON (fields the collector keeps but does not read) is
bounded in depth and size. What passes here can be stored, read back and shown by both
backends; what does not is a 422 naming the field (``loc``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, StringConstraints
from pydantic.json_schema import WithJsonSchema

MAX_TEXT = 4096  # a reason, an error message, a label
MAX_KEY = 128  # a map key, a name
MAX_DEPTH = 8  # free-form JSON: nesting of objects and arrays
MAX_ITEMS = 1024  # free-form JSON: elements of one array, keys of one object
MAX_NODES = 20_000  # free-form JSON: values in one field, all levels together
INT64 = 2**63 - 1
MAX_TS = 2**34  # Unix seconds: year 2514; a timestamp past it is not a time

# Strict: no coercion ("5" is not 5, 1 is not true); finite floats; unknown keys refused.
STRICT = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")
# The same, for bodies a board sends: keys a newer agent adds are kept, as bounded JSON.
OPEN = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")

_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")
# Checked in pydantic's core, not in Python (the decision batch is the hot path). A
# constrained string with an unpaired surrogate is refused there too (``string_unicode``).
CLEAN_PATTERN = r"^[^\x00]*$"
# ``names.is_safe_name`` as one regular expression without look-around (rust-regex): a
# letter or digit, then letters, digits, "_", "-", each "." followed by another character
# or ending the name (no ".."); 128 characters at most (max_length).
NAME_PATTERN = r"^[A-Za-z0-9](?:\.?[A-Za-z0-9_-])*\.?$"


def json_value(v: Any) -> Any:
    """``v`` if it is JSON a page can read back on both backends: nesting at most
    ``MAX_DEPTH``, arrays and objects of at most ``MAX_ITEMS``, ``MAX_NODES`` values in
    all, strings (and keys) bounded and clean, floats finite.
    ``ValueError`` naming the path inside the value otherwise (iterative: a body nested
    100,000 deep is refused, not a ``RecursionError``)."""
    stack: list[tuple[Any, str, int]] = [(v, "", 0)]
    nodes = 0
    while stack:
        x, path, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ValueError(f"more than {MAX_NODES} values")
        where = f" at {path}" if path else ""
        if x is None or isinstance(x, bool):
            continue
        if isinstance(x, int):
            continue  # json.loads bounds its digits (4300)
        if isinstance(x, float):
            if x != x or x in (float("inf"), float("-inf")):
                raise ValueError(f"number must be finite{where}")
        elif isinstance(x, str):
            if len(x) > MAX_TEXT:
                raise ValueError(f"string longer than {MAX_TEXT} characters{where}")
            if _BAD_CHARS.search(x):
                raise ValueError(f"string holds NUL or an unpaired surrogate{where}")
        elif isinstance(x, (list, dict)):
            if depth >= MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels{where}")
            if len(x) > MAX_ITEMS:
                raise ValueError(f"more than {MAX_ITEMS} elements{where}")
            if isinstance(x, list):
                stack.extend((e, f"{path}[{i}]", depth + 1) for i, e in enumerate(x))
            else:
                for k, e in x.items():
                    if not isinstance(k, str) or len(k) > MAX_KEY or _BAD_CHARS.search(k):
                        raise ValueError(f"bad key {str(k)[:40]!r}{where}")
                    stack.append((e, f"{path}.{k}" if path else k, depth + 1))
        else:
            raise ValueError(f"not a JSON value{where}")
    return v


Text = Annotated[str, StringConstraints(max_length=MAX_TEXT, pattern=CLEAN_PATTERN)]
Key = Annotated[str, StringConstraints(min_length=1, max_length=MAX_KEY, pattern=CLEAN_PATTERN)]
Name = Annotated[str, StringConstraints(max_length=MAX_KEY, pattern=NAME_PATTERN)]
Count = Annotated[int, Field(ge=0, le=INT64)]
Int64 = Annotated[int, Field(ge=-INT64 - 1, le=INT64)]
Finite = float  # finite by the models' allow_inf_nan=False
NonNeg = Annotated[float, Field(ge=0)]
Timestamp = Annotated[float, Field(ge=0, le=MAX_TS,
                                   description="Unix time in seconds (a number, not a string)")]
Json = Annotated[Any, BeforeValidator(json_value), WithJsonSchema({})]
