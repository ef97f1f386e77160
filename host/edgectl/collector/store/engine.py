"""From ``--db`` to a SQLAlchemy engine: SQLite (WAL, one writer per process at a time)
or PostgreSQL through psycopg 3. Anything else is refused with one clear line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError

from edge_common.errors import ConfigError, EdgeError

SQLITE_FILE_MODE = 0o640  # the database: the collector's user and group only


class StoreError(EdgeError, RuntimeError):
    """The database cannot be used: unreachable, too old (not migrated), or a migration
    failed (the original is left as it was)."""


def database_url(db: str | os.PathLike[str] | None, data_dir: str | Path | None = None) -> URL:
    """``--db`` as a SQLAlchemy URL: ``sqlite:///PATH`` or a bare path (SQLite),
    ``postgresql://…`` (psycopg 3); default ``DATA_DIR/collector.db``.

    ``ConfigError`` for anything else (another scheme, a malformed URL, SQLite in memory).
    """
    if db is None or str(db) == "":
        if data_dir is None:
            raise ConfigError("--db: no database given and no data dir to put one in")
        return URL.create("sqlite", database=str(Path(data_dir) / "collector.db"))
    text = os.fspath(db)
    if "://" not in text:
        return URL.create("sqlite", database=text)
    try:
        url = make_url(text)
    except ArgumentError as err:
        raise ConfigError(f"--db: not a database URL: {_hide_password(text)!r}") from err
    backend, _, driver = url.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        if not url.database or url.database == ":memory:":
            raise ConfigError("--db: sqlite needs a file path: sqlite:///PATH")
        return url.set(drivername="sqlite")
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        if not url.database:
            raise ConfigError("--db: postgresql URL without a database name "
                              "(postgresql://USER@HOST:PORT/DBNAME)")
        return url.set(drivername="postgresql+psycopg")
    raise ConfigError(f"--db: unsupported database {url.drivername!r}: use sqlite:///PATH or "
                      "postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME (psycopg 3)")


def _hide_password(text: str) -> str:
    head, sep, tail = text.partition("@")
    if not sep or ":" not in head.split("://", 1)[-1]:
        return text
    scheme, _, creds = head.partition("://")
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{tail}"


def display(url: URL) -> str:
    """``url`` for messages and logs: no password, no driver name."""
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def make_engine(url: URL, pool_size: int = 8) -> Engine:
    """An engine for ``url``. SQLite: the file made 0640 first, WAL, ``synchronous=NORMAL``,
    foreign keys on, a 30 s busy timeout; a connection with the execution option
    ``sqlite_write=True`` begins ``BEGIN IMMEDIATE`` (a writer never has to upgrade a read
    lock, which SQLite refuses without waiting), readers a plain ``BEGIN``.
    PostgreSQL: a pool of ``pool_size`` connections, no overflow."""
    if is_sqlite(url):
        path = Path(str(url.database))
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, SQLITE_FILE_MODE))
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                                  pool_size=pool_size, max_overflow=pool_size)

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                           "busy_timeout=30000"):
                cur.execute(f"PRAGMA {pragma}")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            write = conn.get_execution_options().get("sqlite_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    # No pre-ping: it costs a round trip per checkout (~12% of throughput in
    # benchmarks/bench_collector.py). After a server restart the first request on each
    # stale connection fails (SQLAlchemy then drops the pool) and the board retries it,
    # which is harmless: every write is idempotent.
    # No overflow either: a worker's request threads (anyio's 40) wait for one of its
    # ``pool_size`` connections rather than open and close extra ones, a PostgreSQL
    # backend started and torn down per request under load (profiled: hundreds a second
    # with 8 + 8 at 200 boards); more concurrent queries than that gain nothing in a
    # process that holds the GIL for most of each request.
    return sa.create_engine(url, pool_size=pool_size, max_overflow=0, pool_recycle=3600)
