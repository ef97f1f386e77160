"""The collector's storage: SQLAlchemy 2.x Core over SQLite (the default, WAL) or
PostgreSQL (psycopg 3), one schema and one set of queries for both.

``schema`` holds the tables, ``engine`` turns ``--db`` into an engine, ``queries`` the
``Store`` every handler uses, ``migrate`` runs the Alembic migrations shipped in
``migrations/`` (programmatically, no ``alembic.ini``), with a backup first on SQLite.
Idempotence lives in the database: decisions, samples and update reports are keyed by
``(device, id)`` and inserted with ``ON CONFLICT DO NOTHING``, so it holds across
several workers.
"""

from __future__ import annotations

from edgectl.collector.store.engine import StoreError, database_url
from edgectl.collector.store.queries import DuplicateError, Store

__all__ = ["DuplicateError", "Store", "StoreError", "database_url"]
