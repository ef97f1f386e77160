"""The durable journal of decisions and samples: SQLite (WAL) plus a samples folder.

Contract (docs/architecture.md, "Journal contract"): ``record`` writes and commits a
decision before it returns, so anything the agent reports (logs, status, actuation
report) is already on disk; sync reads ``unsent`` batches and ``mark_sent`` them;
``prune`` bounds disk use, dropping the oldest *sent* rows first.

Durability: WAL with ``synchronous=FULL`` by default (each commit is fsynced: survives
power loss); ``normal`` survives a process kill (SIGKILL, crash) but may lose the last
commits on power loss, at a fraction of the cost on an SD card.

One connection guarded by a lock serves every thread of the process (the main loop
records, the sync worker reads and marks); other processes may open the same file
(WAL allows concurrent readers).
"""

from __future__ import annotations

import io
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edge_common.errors import ConfigError
from edge_common.fileio import write_bytes_atomic

log = logging.getLogger(__name__)

DB_NAME = "journal.sqlite"
DECISIONS = ("ok", "reject", "review")
SYNCHRONOUS = ("full", "normal")
SAMPLE_FORMATS = {"jpeg": ".jpg", "png": ".png"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    ts REAL NOT NULL,
    decision TEXT NOT NULL,
    deadline_missed INTEGER NOT NULL DEFAULT 0,
    sent INTEGER NOT NULL DEFAULT 0,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_sent ON decisions (sent, seq);
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    decision_id TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    ts REAL NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS samples_sent ON samples (sent, seq);
CREATE INDEX IF NOT EXISTS samples_decision ON samples (decision_id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_COUNTERS = ("total", "ok", "reject", "review", "deadline_misses")


def encode_image(image: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode an ``H×W×3`` uint8 RGB frame as JPEG or PNG bytes (Pillow)."""
    from PIL import Image

    buf = io.BytesIO()
    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=quality)
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()


class Journal:
    """SQLite journal at ``path`` (a ``.sqlite`` file, or a folder that gets ``journal.sqlite``).

    Samples are image files under ``samples_dir`` (default: ``samples/`` beside the
    database); their rows store paths relative to that folder.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        samples_dir: str | os.PathLike[str] | None = None,
        synchronous: str = "full",
        sample_format: str = "jpeg",
    ) -> None:
        p = Path(path)
        if p.is_dir() or (not p.suffix and not p.exists()):
            p = p / DB_NAME
        if synchronous not in SYNCHRONOUS:
            raise ConfigError(f"journal.synchronous: must be one of {', '.join(SYNCHRONOUS)}")
        if sample_format not in SAMPLE_FORMATS:
            raise ConfigError(f"samples.format: must be one of {', '.join(SAMPLE_FORMATS)}")
        p.parent.mkdir(parents=True, exist_ok=True)
        self.path = p
        self.samples_dir = Path(samples_dir) if samples_dir else p.parent / "samples"
        self.sample_format = sample_format
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(p), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        with self._lock:
            # auto_vacuum must be chosen before the first table exists; harmless afterwards.
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.executescript(_SCHEMA)
            self._db.executemany(
                "INSERT OR IGNORE INTO counters (name, value) VALUES (?, 0)",
                [(c,) for c in _COUNTERS],
            )

    # -- writing -----------------------------------------------------------------------

    def record(self, decision: dict[str, Any], image: np.ndarray | None = None) -> str:
        """Write one decision (and its sample image, if given); commit; return its id.

        ``decision`` carries the record fields (``ts, item, label, score, probs, decision,
        truth, model_version, latency_ms, deadline_missed``); ``id`` (UUID4) and ``seq``
        are assigned here unless ``id`` is given. With ``image``, the sample file is
        written (atomically) before the row that names it is committed.
        """
        return self.record_many([(decision, image)])[0]

    def record_many(self, items: list[tuple[dict[str, Any], np.ndarray | None]]) -> list[str]:
        """Like :meth:`record` for several decisions in one transaction (one fsync).

        All or nothing: if any record is invalid, none is written. The agent's journal
        writer uses it to commit whatever queued up while the previous commit was syncing.
        """
        prepared = [self._prepare(d, img) for d, img in items]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                bumps: dict[str, int] = {}
                for rec, sample_row in prepared:
                    kind = rec["decision"]
                    cur = self._db.execute(
                        "INSERT INTO decisions (id, ts, decision, deadline_missed, body)"
                        " VALUES (?, ?, ?, ?, '{}')",
                        (rec["id"], float(rec["ts"]), kind, int(rec["deadline_missed"])),
                    )
                    rec["seq"] = int(cur.lastrowid or 0)
                    self._db.execute(
                        "UPDATE decisions SET body = ? WHERE seq = ?",
                        (json.dumps(rec, default=_json_default), rec["seq"]),
                    )
                    if sample_row is not None:
                        self._db.execute(
                            "INSERT INTO samples (id, decision_id, path, bytes, ts)"
                            " VALUES (?, ?, ?, ?, ?)",
                            sample_row,
                        )
                    for b in ["total", kind] + (
                        ["deadline_misses"] if rec["deadline_missed"] else []
                    ):
                        bumps[b] = bumps.get(b, 0) + 1
                self._db.executemany(
                    "UPDATE counters SET value = value + ? WHERE name = ?",
                    [(n, b) for b, n in bumps.items()],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return [rec["id"] for rec, _ in prepared]

    def _prepare(
        self, decision: dict[str, Any], image: np.ndarray | None
    ) -> tuple[dict[str, Any], tuple[str, str, str, int, float] | None]:
        rec = dict(decision)
        rec["id"] = str(rec.get("id") or uuid.uuid4())
        rec.setdefault("ts", time.time())
        if rec.get("decision") not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {rec.get('decision')!r}")
        rec["deadline_missed"] = bool(rec.get("deadline_missed", False))
        sample_row = None
        if image is not None:
            rel = f"{time.strftime('%Y%m%d', time.gmtime(rec['ts']))}/{rec['id']}"
            rel += SAMPLE_FORMATS[self.sample_format]
            data = encode_image(image, self.sample_format)
            write_bytes_atomic(self.samples_dir / rel, data)
            rec["sample"] = rel
            sample_row = (str(uuid.uuid4()), rec["id"], rel, len(data), float(rec["ts"]))
        else:
            rec.setdefault("sample", None)
        return rec, sample_row

    def mark_sent(self, ids: Iterable[str]) -> int:
        """Mark decisions as delivered to the host; unknown ids are ignored. Returns count."""
        return self._mark("decisions", ids)

    def mark_samples_sent(self, ids: Iterable[str]) -> int:
        """Mark sample files as uploaded; unknown ids are ignored. Returns count."""
        return self._mark("samples", ids)

    def _mark(self, table: str, ids: Iterable[str]) -> int:
        ids = list(ids)
        if not ids:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = 0
                for chunk in _chunks(ids, 500):
                    marks = ",".join("?" * len(chunk))
                    cur = self._db.execute(
                        f"UPDATE {table} SET sent = 1 WHERE sent = 0 AND id IN ({marks})", chunk
                    )
                    n += cur.rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return n

    # -- reading -----------------------------------------------------------------------

    def unsent(self, limit: int = 100) -> list[dict[str, Any]]:
        """The oldest ``limit`` decisions not yet marked sent, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM decisions WHERE sent = 0 ORDER BY seq LIMIT ?", (int(limit),)
            ).fetchall()
        return [json.loads(r["body"]) for r in rows]

    def unsent_samples(self, limit: int = 100) -> list[dict[str, Any]]:
        """The oldest ``limit`` unsent samples: ``id, decision_id, path`` (absolute), ``bytes``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, decision_id, path, bytes, ts FROM samples WHERE sent = 0"
                " ORDER BY seq LIMIT ?",
                (int(limit),),
            ).fetchall()
        return [
            {
                "id": r["id"],
                "decision_id": r["decision_id"],
                "path": str(self.samples_dir / r["path"]),
                "bytes": int(r["bytes"]),
                "ts": float(r["ts"]),
            }
            for r in rows
        ]

    def get(self, rec_id: str) -> dict[str, Any] | None:
        """One decision record by id (``None`` when unknown or pruned)."""
        with self._lock:
            row = self._db.execute("SELECT body FROM decisions WHERE id = ?", (rec_id,)).fetchone()
        return json.loads(row["body"]) if row else None

    def ids(self) -> list[str]:
        """Every decision id currently stored, oldest first."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM decisions ORDER BY seq")]

    def counts(self) -> dict[str, int]:
        """Lifetime totals (``total, ok, reject, review, deadline_misses``; they survive
        pruning), plus ``unsent`` and ``rows`` currently stored."""
        with self._lock:
            out = {r["name"]: int(r["value"]) for r in self._db.execute("SELECT * FROM counters")}
            out["unsent"] = int(
                self._db.execute("SELECT COUNT(*) FROM decisions WHERE sent = 0").fetchone()[0]
            )
            out["rows"] = int(self._db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])
        return out

    def disk_bytes(self) -> int:
        """Bytes used: the database (used pages, WAL) plus the sample files it lists."""
        with self._lock:
            return self._db_bytes() + self._samples_bytes()

    def _db_bytes(self, wal: bool = True) -> int:
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        wal_path = self.path.with_name(self.path.name + "-wal")
        wal_bytes = wal_path.stat().st_size if wal and wal_path.exists() else 0
        return int((pages - free) * page_size + wal_bytes)

    def _used_bytes(self) -> int:
        # The WAL is transient (truncated at the end of prune), so bound the data itself.
        return self._db_bytes(wal=False) + self._samples_bytes()

    def _samples_bytes(self) -> int:
        return int(self._db.execute("SELECT COALESCE(SUM(bytes), 0) FROM samples").fetchone()[0])

    # -- bounding disk use -------------------------------------------------------------

    def prune(self, max_bytes: int | None = None, max_rows: int | None = None) -> dict[str, int]:
        """Bound the journal: delete the oldest *sent* decisions (and their samples) until
        at most ``max_rows`` rows remain and disk use is at most ``max_bytes``.

        Unsent decisions are never deleted (the host has not seen them); if sent rows are
        not enough, sample *files* of the oldest unsent decisions are dropped next (the
        decision rows stay; images are the bulk). Returns what was removed.
        """
        removed = {"rows": 0, "samples": 0, "bytes_freed": 0}
        with self._lock:
            before = self._used_bytes()
            if max_rows is not None:
                total = self._db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
                excess = max(0, int(total) - int(max_rows))
                if excess:
                    ids = [
                        r[0]
                        for r in self._db.execute(
                            "SELECT id FROM decisions WHERE sent = 1 ORDER BY seq LIMIT ?",
                            (excess,),
                        )
                    ]
                    self._delete_decisions(ids, removed)
            if max_bytes is not None:
                while self._used_bytes() > max_bytes:
                    ids = [
                        r[0]
                        for r in self._db.execute(
                            "SELECT id FROM decisions WHERE sent = 1 ORDER BY seq LIMIT 200"
                        )
                    ]
                    if not ids:
                        break
                    self._delete_decisions(ids, removed)
                    self._db.execute("PRAGMA incremental_vacuum")
                while self._used_bytes() > max_bytes:
                    rows = self._db.execute(
                        "SELECT id, path FROM samples ORDER BY seq LIMIT 50"
                    ).fetchall()
                    if not rows:
                        break
                    self._delete_samples(rows, removed)
                if self._used_bytes() > max_bytes:
                    log.warning(
                        "journal: %d unsent decisions exceed max_bytes=%d; keeping them",
                        self.counts()["unsent"],
                        max_bytes,
                    )
            self._db.execute("PRAGMA incremental_vacuum")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            removed["bytes_freed"] = max(0, before - self._used_bytes())
        return removed

    def _delete_decisions(self, ids: list[str], removed: dict[str, int]) -> None:
        if not ids:
            return
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT id, path FROM samples WHERE decision_id IN ({marks})", chunk
            ).fetchall()
            self._delete_samples(rows, removed)
            cur = self._db.execute(f"DELETE FROM decisions WHERE id IN ({marks})", chunk)
            removed["rows"] += cur.rowcount

    def _delete_samples(self, rows: list[sqlite3.Row], removed: dict[str, int]) -> None:
        if not rows:
            return
        # Row first, then the file: a crash in between leaves an orphan file, never a
        # row naming a missing file.
        ids = [r["id"] for r in rows]
        marks = ",".join("?" * len(ids))
        self._db.execute(f"DELETE FROM samples WHERE id IN ({marks})", ids)
        for r in rows:
            try:
                (self.samples_dir / r["path"]).unlink()
            except FileNotFoundError:
                pass
        removed["samples"] += len(rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chunks(items: list[str], n: int) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
