"""The collector's hot path on PostgreSQL, on the bare driver: the decision batch insert
and the token lookup that precedes every device request.

The same ``INSERT … ON CONFLICT (device, id) DO NOTHING`` as on SQLite (exactly-once is
still the primary key's, across any number of workers), shaped for what psycopg 3 does
cheaply. Profiled with cProfile on batches of 200 (benchmarks/bench_collector.py), the
former SQLAlchemy ``text()`` statement spent most of a worker's time per record in Python:

- psycopg dumped the column arrays in *text* format, escaping every ``"`` of every JSON
  body with a regular expression (~66 substitutions per record). Here the arrays go in
  *binary* format (``%b``): no escaping at all.
- BEGIN, INSERT, UPDATE, COMMIT were four round trips through SQLAlchemy's execution
  layer. Here it is one statement in autocommit (the insert and the device's
  ``last_seen`` in one data-modifying CTE, atomic as any single statement), one round
  trip, prepared by psycopg after a few executions, and one count back instead of a row
  per new record. SQLAlchemy still owns the pool and every other query.
- The token lookup is one indexed SELECT; through SQLAlchemy's execution layer it cost a
  few times what it costs on the driver, on every request.
"""

from __future__ import annotations

from typing import Any

_INSERT = """
WITH ins AS (
  INSERT INTO decisions (device, id, seq, ts, label, decision, model_version, body, received)
  SELECT %(device)t, r.id, r.seq, r.ts, r.label, r.decision, r.model_version, r.body,
         %(received)b::float8
  FROM unnest(%(id)b::text[], %(seq)b::int8[], %(ts)b::float8[], %(label)b::text[],
              %(decision)b::text[], %(model_version)b::text[], %(body)b::text[])
    AS r(id, seq, ts, label, decision, model_version, body)
  ON CONFLICT (device, id) DO NOTHING
  RETURNING 1
), seen AS (
  UPDATE devices SET last_seen = %(received)b::float8 WHERE name = %(device)t
)
SELECT count(*) FROM ins
"""


def insert_decisions(dbapi_conn: Any, device: str, columns: dict[str, list[Any]],
                     received: float) -> int:
    """Insert one batch on a psycopg connection (in autocommit for the call); return how
    many rows were new. ``columns``: id, seq, ts, label, decision, model_version, body,
    one list each, in record order."""
    was = dbapi_conn.autocommit
    dbapi_conn.autocommit = True
    try:
        with dbapi_conn.cursor() as cur:
            cur.execute(_INSERT, {"device": device, "received": received, **columns})
            return int(cur.fetchone()[0])
    finally:
        dbapi_conn.autocommit = was


def device_for_token_hash(dbapi_conn: Any, token_hash: str) -> str | None:
    """The name of the device with this token hash, or None (a read: no transaction)."""
    was = dbapi_conn.autocommit
    dbapi_conn.autocommit = True
    try:
        with dbapi_conn.cursor() as cur:
            cur.execute("SELECT name FROM devices WHERE token_hash = %s", (token_hash,))
            row = cur.fetchone()
    finally:
        dbapi_conn.autocommit = was
    return None if row is None else str(row[0])
