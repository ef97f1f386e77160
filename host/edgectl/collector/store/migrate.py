"""Schema migrations (Alembic, shipped in ``migrations/``, run in code: no ``alembic.ini``).

``upgrade(url)`` brings a database to the newest revision:

- a new database gets the whole schema;
- a collector database made before migrations existed (the SQLite schema of
  ``collector/store.py`` up to this change: tables, no ``alembic_version``) is recognised,
  stamped as the baseline revision and upgraded, every row kept;
- SQLite: the upgrade runs on a copy (SQLite's online backup), the row counts of every
  table are compared, and only then is the copy moved into place; the original stays
  beside it as ``PATH.bak-REV-TIME``. Any failure leaves the original as it was.
- PostgreSQL: one transaction (its DDL is transactional) under an advisory lock, so
  several collectors starting at once migrate once; a failure rolls everything back.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Engine

from edgectl.collector.store.engine import (
    SQLITE_FILE_MODE,
    StoreError,
    display,
    is_sqlite,
    make_engine,
)

MIGRATIONS = Path(__file__).parent / "migrations"
BASELINE = "0001"
LEGACY_TABLES = ("devices", "decisions", "samples", "bundles", "desired", "updates")
_PG_LOCK = 0x65646765  # "edge": the advisory lock id migrations hold on PostgreSQL


def alembic_config(connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision shipped with this code."""
    return str(ScriptDirectory.from_config(alembic_config()).get_current_head())


def current(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def check_current(engine: Engine) -> None:
    """``StoreError`` unless the database is at the newest revision."""
    try:
        with engine.connect() as conn:
            rev = current(conn)
    except sa.exc.SQLAlchemyError as err:
        raise StoreError(f"cannot open the database: {_short(err)}") from err
    if rev != head():
        raise StoreError(f"database schema is at revision {rev or 'none'}, this collector "
                         f"needs {head()}: run `edgectl serve --db URL migrate`")


def upgrade(url: URL) -> str | None:
    """Bring ``url``'s database to the newest revision; return the backup path (SQLite,
    when there was something to upgrade) or None."""
    if is_sqlite(url):
        return _upgrade_sqlite(Path(str(url.database)))
    engine = make_engine(url, pool_size=1)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
            _run(conn)
    except sa.exc.SQLAlchemyError as err:
        raise StoreError(f"database {display(url)}: "
                         f"{_short(err)}") from err
    finally:
        engine.dispose()
    return None


def _run(conn: sa.Connection) -> None:
    """Upgrade on ``conn``, recognising a collector database from before migrations."""
    cfg = alembic_config(conn)
    tables = set(sa.inspect(conn).get_table_names())
    if "alembic_version" not in tables and "devices" in tables:
        cols = {c["name"] for c in sa.inspect(conn).get_columns("desired")}
        if "allow_downgrade" not in cols:  # a collector.db from before that column
            conn.execute(sa.text("ALTER TABLE desired ADD COLUMN allow_downgrade "
                                 "INTEGER NOT NULL DEFAULT 0"))
        command.stamp(cfg, BASELINE)
    command.upgrade(cfg, "head")


def _sqlite_revision(path: Path) -> tuple[str | None, bool]:
    """(revision, has tables) of the SQLite file at ``path``, read-only."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        rev = None
        if "alembic_version" in names:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
            rev = row[0] if row else None
        return rev, bool(names)


def _counts(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return {n: db.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0]  # noqa: S608
                for n in LEGACY_TABLES if n in names}


def _upgrade_sqlite(path: Path) -> str | None:
    if not path.exists() or path.stat().st_size == 0:
        _migrate_file(path)  # a new database: nothing to keep
        return None
    try:
        rev, has_tables = _sqlite_revision(path)
    except sqlite3.Error as err:
        raise StoreError(f"{path} is not a usable SQLite database: {err}") from err
    if not has_tables:
        _migrate_file(path)
        return None
    if rev == head():
        return None
    before = _checkpoint(path)
    work = path.with_name(path.name + ".migrating")
    work.unlink(missing_ok=True)
    os.close(os.open(work, os.O_WRONLY | os.O_CREAT, SQLITE_FILE_MODE))
    try:
        with contextlib.closing(sqlite3.connect(path)) as src, \
                contextlib.closing(sqlite3.connect(work)) as dst:
            src.backup(dst)
        _migrate_file(work)
        _checkpoint(work)  # everything in the file itself: its WAL must not stay behind
        after = _counts(work)
        lost = {k: (n, after.get(k)) for k, n in before.items() if after.get(k) != n}
        if lost:
            raise StoreError(f"row counts changed while migrating (before, after): {lost}")
    except Exception as err:
        for p in _with_sidecars(work):
            p.unlink(missing_ok=True)
        if isinstance(err, StoreError):
            raise StoreError(f"migrating {path} failed; the original is untouched: "
                             f"{err}") from err
        raise StoreError(f"migrating {path} failed; the original is untouched: "
                         f"{_short(err)}") from err
    backup = path.with_name(f"{path.name}.bak-{rev or 'legacy'}-{time.strftime('%Y%m%dT%H%M%S')}")
    os.link(path, backup)
    for side in list(_with_sidecars(path))[1:]:  # empty after _checkpoint; not the new file's
        side.unlink(missing_ok=True)
    os.replace(work, path)
    for side in list(_with_sidecars(work))[1:]:
        side.unlink(missing_ok=True)
    return str(backup)


def _checkpoint(path: Path) -> dict[str, int]:
    """Fold the WAL into ``path`` and make sure nobody else has it open (a stale WAL
    beside a replaced file would be replayed into it); return its row counts."""
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    wal = path.with_name(path.name + "-wal")
    if busy:
        raise StoreError(f"{path} is in use by another process: stop the collector before "
                         "migrating")
    if wal.exists() and wal.stat().st_size > 0:
        raise StoreError(f"{path} is in use by another process: stop the collector before "
                         "migrating")
    return _counts(path)


def _with_sidecars(path: Path) -> Iterator[Path]:
    yield path
    for suffix in ("-wal", "-shm"):
        yield path.with_name(path.name + suffix)


def _migrate_file(path: Path) -> None:
    engine = make_engine(URL.create("sqlite", database=str(path)), pool_size=1)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(sqlite_write=True)
            with conn.begin():
                _run(conn)
    finally:
        engine.dispose()


def timescaledb_available(conn: sa.Connection) -> bool:
    """Whether the TimescaleDB extension can be used on this PostgreSQL server."""
    if conn.dialect.name != "postgresql":
        return False
    q = sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return conn.execute(q).first() is not None


def _short(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    return text[0] if text else type(err).__name__
