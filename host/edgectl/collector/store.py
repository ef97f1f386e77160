"""The collector's storage: SQLite (stdlib ``sqlite3``, WAL), nothing else.

Idempotence lives here: decisions, samples and update reports are keyed by
``(device, id)`` and inserted with ``INSERT OR IGNORE``, so a batch sent twice is
accepted twice and stored once. One connection per thread (SQLite connections are not
shared across threads); writes are serialised by a process lock and ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    name TEXT PRIMARY KEY,
    grp TEXT,
    token_hash TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    last_seen REAL,
    heartbeat TEXT
);
CREATE TABLE IF NOT EXISTS decisions (
    device TEXT NOT NULL,
    id TEXT NOT NULL,
    seq INTEGER,
    ts REAL,
    label TEXT,
    decision TEXT,
    model_version TEXT,
    body TEXT NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (device, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS samples (
    device TEXT NOT NULL,
    id TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (device, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bundles (
    version TEXT PRIMARY KEY,
    name TEXT,
    filename TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS desired (
    kind TEXT NOT NULL CHECK (kind IN ('device', 'group')),
    target TEXT NOT NULL,
    version TEXT NOT NULL REFERENCES bundles(version),
    updated REAL NOT NULL,
    allow_downgrade INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, target)
);
CREATE TABLE IF NOT EXISTS updates (
    device TEXT NOT NULL,
    id TEXT NOT NULL,
    ts REAL,
    version TEXT,
    outcome TEXT NOT NULL,
    reason TEXT,
    body TEXT NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (device, id)
);
"""


class DuplicateError(KeyError):
    """The row already exists with different content (a device name, a bundle version)."""


class Store:
    """SQLite storage for devices, decisions, samples, bundles, desired versions, updates."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # Create it 0640 before SQLite does (0644); its -wal/-shm files copy the mode.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o640))
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        with self._write_lock:
            self._conn().executescript(SCHEMA)  # executescript manages its own transaction
            cols = {r[1] for r in self._conn().execute("PRAGMA table_info(desired)")}
            if "allow_downgrade" not in cols:  # a collector.db from before the column
                self._conn().execute("ALTER TABLE desired ADD COLUMN allow_downgrade "
                                     "INTEGER NOT NULL DEFAULT 0")
                self._conn().commit()

    # -- connections ---------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()

    # -- devices -------------------------------------------------------------------------

    def add_device(self, name: str, group: str | None, token_hash: str,
                   now: float | None = None) -> None:
        """Register a device; ``DuplicateError`` if the name is taken."""
        with self._write() as db:
            try:
                db.execute("INSERT INTO devices(name, grp, token_hash, created) VALUES (?,?,?,?)",
                           (name, group, token_hash, now or time.time()))
            except sqlite3.IntegrityError as err:
                raise DuplicateError(f"device {name!r} already exists") from err

    def set_device_token(self, name: str, token_hash: str) -> bool:
        """Replace a device's token hash (rotation); False if the device is unknown."""
        with self._write() as db:
            cur = db.execute("UPDATE devices SET token_hash=? WHERE name=?", (token_hash, name))
            return cur.rowcount == 1

    def device_for_token_hash(self, token_hash: str) -> str | None:
        row = self._conn().execute("SELECT name FROM devices WHERE token_hash=?",
                                   (token_hash,)).fetchone()
        return None if row is None else str(row["name"])

    def device(self, name: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT name, grp, created, last_seen, heartbeat FROM devices "
                                   "WHERE name=?", (name,)).fetchone()
        return None if row is None else _device_dict(row)

    def devices(self) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT name, grp, created, last_seen, heartbeat FROM devices "
                                    "ORDER BY name").fetchall()
        return [_device_dict(r) for r in rows]

    def record_heartbeat(self, device: str, body: dict[str, Any], now: float | None = None) -> None:
        with self._write() as db:
            db.execute("UPDATE devices SET last_seen=?, heartbeat=? WHERE name=?",
                       (now or time.time(), json.dumps(body, sort_keys=True), device))

    def touch(self, device: str, now: float | None = None) -> None:
        """Note that ``device`` was seen (any authenticated request)."""
        with self._write() as db:
            db.execute("UPDATE devices SET last_seen=? WHERE name=?", (now or time.time(), device))

    # -- decisions -----------------------------------------------------------------------

    def add_decisions(self, device: str, records: Iterable[dict[str, Any]],
                      now: float | None = None) -> tuple[int, int]:
        """Insert records keyed by ``(device, id)``; return ``(accepted, duplicates)``.

        A repeat of an id already stored is a duplicate: counted, not stored again.
        """
        received = now or time.time()
        rows = [(device, str(r["id"]), r.get("seq"), r.get("ts"), r.get("label"),
                 r.get("decision"), r.get("model_version"), json.dumps(r, sort_keys=True),
                 received) for r in records]
        with self._write() as db:
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO decisions(device, id, seq, ts, label, decision,"
                           " model_version, body, received) VALUES (?,?,?,?,?,?,?,?,?)", rows)
            accepted = db.total_changes - before
            if rows:
                db.execute("UPDATE devices SET last_seen=? WHERE name=?", (received, device))
        return accepted, len(rows) - accepted

    def decision_count(self, device: str | None = None) -> int:
        if device is None:
            return int(self._conn().execute("SELECT COUNT(*) FROM decisions").fetchone()[0])
        return int(self._conn().execute("SELECT COUNT(*) FROM decisions WHERE device=?",
                                        (device,)).fetchone()[0])

    def decisions(self, device: str, limit: int = 1000,
                  after_seq: int = -1) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT body FROM decisions WHERE device=? AND COALESCE(seq, 0) > ? "
            "ORDER BY seq, id LIMIT ?", (device, after_seq, limit)).fetchall()
        return [json.loads(r["body"]) for r in rows]

    def decision_stats(self) -> dict[str, dict[str, int]]:
        """Per device: decisions received, and how many per decision kind."""
        out: dict[str, dict[str, int]] = {}
        for r in self._conn().execute("SELECT device, decision, COUNT(*) AS n FROM decisions "
                                      "GROUP BY device, decision"):
            d = out.setdefault(r["device"], {"received": 0})
            d["received"] += r["n"]
            d[str(r["decision"])] = r["n"]
        return out

    # -- samples -------------------------------------------------------------------------

    def has_sample(self, device: str, sample_id: str) -> bool:
        return self._conn().execute("SELECT 1 FROM samples WHERE device=? AND id=?",
                                    (device, sample_id)).fetchone() is not None

    def add_sample(self, device: str, sample_id: str, path: str, size: int, content_type: str,
                   now: float | None = None) -> bool:
        """Record a stored sample file; False if it was already there (a repeat)."""
        with self._write() as db:
            cur = db.execute("INSERT OR IGNORE INTO samples(device, id, path, bytes, content_type,"
                             " received) VALUES (?,?,?,?,?,?)",
                             (device, sample_id, path, size, content_type, now or time.time()))
            return cur.rowcount == 1

    def sample_count(self, device: str | None = None) -> int:
        if device is None:
            return int(self._conn().execute("SELECT COUNT(*) FROM samples").fetchone()[0])
        return int(self._conn().execute("SELECT COUNT(*) FROM samples WHERE device=?",
                                        (device,)).fetchone()[0])

    # -- bundles and desired versions ----------------------------------------------------

    def add_bundle(self, version: str, name: str | None, filename: str, sha256: str, size: int,
                   manifest: dict[str, Any], now: float | None = None) -> bool:
        """Register a bundle; False if the same version with the same sha256 exists.

        ``DuplicateError`` if the version exists with different content: a version names
        one bundle forever, so boards can trust "same version, same model".
        """
        with self._write() as db:
            row = db.execute("SELECT sha256 FROM bundles WHERE version=?", (version,)).fetchone()
            if row is not None:
                if row["sha256"] != sha256:
                    raise DuplicateError(f"bundle version {version!r} already exists with a "
                                         "different sha256")
                return False
            db.execute("INSERT INTO bundles(version, name, filename, sha256, bytes, manifest,"
                       " created) VALUES (?,?,?,?,?,?,?)",
                       (version, name, filename, sha256, size, json.dumps(manifest),
                        now or time.time()))
            return True

    def bundle(self, version: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT version, name, filename, sha256, bytes, created "
                                   "FROM bundles WHERE version=?", (version,)).fetchone()
        return None if row is None else dict(row)

    def bundles(self) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT version, name, filename, sha256, bytes, created "
                                    "FROM bundles ORDER BY created").fetchall()
        return [dict(r) for r in rows]

    def set_desired(self, kind: str, target: str, version: str, now: float | None = None,
                    allow_downgrade: bool = False) -> None:
        """Set the desired bundle version of one device or a whole group; boards refuse a
        version older than the one they run unless ``allow_downgrade``."""
        if kind not in ("device", "group"):
            raise ValueError(f"kind must be 'device' or 'group', got {kind!r}")
        with self._write() as db:
            if db.execute("SELECT 1 FROM bundles WHERE version=?", (version,)).fetchone() is None:
                raise KeyError(f"unknown bundle version {version!r}")
            db.execute("INSERT INTO desired(kind, target, version, updated, allow_downgrade) "
                       "VALUES (?,?,?,?,?) ON CONFLICT(kind, target) DO UPDATE SET "
                       "version=excluded.version, updated=excluded.updated, "
                       "allow_downgrade=excluded.allow_downgrade",
                       (kind, target, version, now or time.time(), int(allow_downgrade)))

    def desired(self) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT kind, target, version, updated, allow_downgrade "
                                    "FROM desired ORDER BY kind, target").fetchall()
        return [dict(r, allow_downgrade=bool(r["allow_downgrade"])) for r in rows]

    def desired_for(self, device: str) -> dict[str, Any] | None:
        """The bundle a device should run: its own setting wins over its group's."""
        row = self._conn().execute(
            "SELECT b.version, b.name, b.filename, b.sha256, b.bytes, d.kind, d.allow_downgrade "
            "FROM devices v JOIN desired d ON (d.kind='device' AND d.target=v.name) "
            "  OR (d.kind='group' AND d.target=v.grp) "
            "JOIN bundles b ON b.version=d.version WHERE v.name=? "
            "ORDER BY d.kind='device' DESC LIMIT 1", (device,)).fetchone()
        return None if row is None else dict(row, allow_downgrade=bool(row["allow_downgrade"]))

    # -- update reports ------------------------------------------------------------------

    def add_update_report(self, device: str, report: dict[str, Any],
                          now: float | None = None) -> bool:
        """Store a device's update outcome; False if this report id was already stored."""
        with self._write() as db:
            cur = db.execute("INSERT OR IGNORE INTO updates(device, id, ts, version, outcome,"
                             " reason, body, received) VALUES (?,?,?,?,?,?,?,?)",
                             (device, str(report["id"]), report.get("ts"), report.get("version"),
                              report["outcome"], report.get("reason"),
                              json.dumps(report, sort_keys=True), now or time.time()))
            return cur.rowcount == 1

    def update_reports(self, device: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT body, received FROM updates WHERE device=? "
                                    "ORDER BY received DESC, rowid DESC LIMIT ?",
                                    (device, limit)).fetchall()
        return [dict(json.loads(r["body"]), received=r["received"]) for r in rows]


def _device_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "name": row["name"],
        "group": row["grp"],
        "created": row["created"],
        "last_seen": row["last_seen"],
        "heartbeat": json.loads(row["heartbeat"]) if row["heartbeat"] else None,
    }
