"""Stored JSON both backends can read: rows written before the strict request schemas
(issue 31) may hold NaN or ±Infinity (which neither SQLite's JSON functions nor
PostgreSQL's ``jsonb`` accept: a page over them failed; a record kept as sent may spell
one ``1e400``), or a ``\\u0000`` or an unpaired
surrogate escape (refused by ``jsonb``). Each such text (a decision's or an update
report's body, a heartbeat, a bundle manifest) is rewritten with those numbers as null
and those characters as U+FFFD; every other value, and every row, is kept.

Only texts that contain one of the markers are parsed (one scan of each table, in SQL;
an exponent marker also matches harmless texts, which ``fixed`` then leaves alone).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# (table, key columns, JSON text column)
TEXTS = (("decisions", ("device", "id"), "body"), ("updates", ("device", "id"), "body"),
         ("devices", ("name",), "heartbeat"), ("bundles", ("version",), "manifest"))
_BAD = re.compile("[\x00\ud800-\udfff]")


def _clean(v: Any) -> Any:
    if isinstance(v, str):
        return _BAD.sub("\ufffd", v)
    if isinstance(v, list):
        return [_clean(x) for x in v]
    if isinstance(v, dict):
        return {_clean(k): _clean(x) for k, x in v.items()}
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def fixed(text: str) -> str | None:
    """``text`` rewritten as strict JSON without NUL or lone surrogates, or None when it
    already is (or is not JSON at all: then it is left as it is)."""
    constants: list[str] = []
    try:  # NaN, Infinity, -Infinity read as null (and noted)
        value = json.loads(text, parse_constant=lambda c: constants.append(c))
    except ValueError:
        return None
    clean = _clean(value)
    if not constants and clean == value:
        return None
    return json.dumps(clean, ensure_ascii=False, allow_nan=False)


def upgrade() -> None:
    conn = op.get_bind()
    meta = sa.MetaData()
    for name, keys, col in TEXTS:
        table = sa.Table(name, meta, autoload_with=conn)
        text = table.c[col]
        marked = sa.or_(text.contains("NaN"), text.contains("Infinity"),
                        text.icontains("\\u0000", autoescape=True),
                        text.icontains("\\ud", autoescape=True),
                        # a number past float range (1e400, kept as sent): an exponent of
                        # three digits or more
                        *(text.icontains(f"e{sign}{d}", autoescape=True)
                          for sign in ("", "+", "-") for d in "123456789"))
        rows = conn.execute(sa.select(*(table.c[k] for k in keys), text)
                            .where(text.is_not(None), marked)).all()
        for row in rows:
            new = fixed(row[-1])
            if new is not None:
                conn.execute(sa.update(table).where(
                    *(table.c[k] == row[i] for i, k in enumerate(keys))).values({col: new}))


def downgrade() -> None:
    pass  # the old texts are not kept: the rewritten ones read the same, less the NaNs
