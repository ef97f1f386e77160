"""The journal's SQLite file: where it is (a ``.sqlite`` file, or a folder that gets
``journal.sqlite``), created with the plant data's mode, opened with the journal's pragmas
(WAL, the configured ``synchronous``), checked (``PRAGMA quick_check``), its schema made or
an older agent's migrated (``journal_schema``), and moved aside with its WAL and SHM when
it is corrupt. ``journal.Journal`` holds the one connection and its lock."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from edge_agent.journal_schema import COUNTERS, DATA_MODE, DB_NAME, SCHEMA, migrate


def database_path(path: str | os.PathLike[str]) -> Path:
    """The database file a journal setting names: a folder (or a name without a suffix
    that does not exist yet) gets ``journal.sqlite``."""
    p = Path(path)
    if p.is_dir() or (not p.suffix and not p.exists()):
        p = p / DB_NAME
    return p


def create(p: Path) -> None:
    """Make the folder and an empty file if there is none."""
    p.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    if not p.exists():
        # Decisions are the plant's data: 0640 whatever the umask (SQLite gives its -wal
        # and -shm files the database file's mode).
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT, DATA_MODE))
        os.chmod(p, DATA_MODE)


def connect(p: Path, synchronous: str, check: bool = False) -> tuple[sqlite3.Connection, int]:
    """One connection to the journal at ``p``, its schema current; returns it and the
    format the file had (``journal_schema.migrate``). ``check``: ``PRAGMA quick_check``
    first, a failure raised as SQLITE_CORRUPT (``journal_schema.is_corrupt``)."""
    db = sqlite3.connect(
        str(p), timeout=30.0, isolation_level=None, check_same_thread=False
    )
    try:
        db.row_factory = sqlite3.Row
        # auto_vacuum must be chosen before the first table exists; harmless afterwards.
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        db.execute("PRAGMA busy_timeout=30000")
        if check:
            row = db.execute("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                err = sqlite3.DatabaseError(f"database disk image is malformed: {row[0]}")
                err.sqlite_errorname = "SQLITE_CORRUPT"  # type: ignore[attr-defined]
                raise err
        db.executescript(SCHEMA)
        migrated_from = migrate(db)  # an older agent's journal: brought up to date
        db.execute("CREATE INDEX IF NOT EXISTS decisions_open ON decisions (state)"
                   " WHERE state = 'open'")
        db.executemany(
            "INSERT OR IGNORE INTO counters (name, value) VALUES (?, 0)",
            [(c,) for c in COUNTERS],
        )
    except BaseException:
        db.close()
        raise
    return db, migrated_from


def move_aside(p: Path) -> Path:
    """Move a corrupt database and its WAL/SHM to ``<name>.corrupt-<UTC time>[-n]``;
    return where the database went."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = p.with_name(f"{p.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = p.with_name(f"{p.name}.corrupt-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(p) + suffix)
        if src.exists():
            os.replace(src, Path(str(aside) + suffix))
    return aside
