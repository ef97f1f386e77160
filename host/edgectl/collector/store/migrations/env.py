"""Alembic environment: always run in code (``edgectl.collector.store.migrate``) on the
connection it hands over in ``config.attributes["connection"]``."""

from __future__ import annotations

from alembic import context

from edgectl.collector.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through edgectl (edgectl serve --db URL migrate)")
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
