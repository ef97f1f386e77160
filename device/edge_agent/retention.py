"""The journal's disk bound: how much it uses and what ``prune`` drops first.

Mixed into :class:`edge_agent.journal.Journal` (which owns the connection, the lock and the
counters); kept apart so the policy reads in one sitting. The policy is in ``prune``'s
docstring and in docs/operations.md.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("edge_agent.journal")


def chunks(items: list[str], n: int) -> Iterable[list[str]]:
    """``items`` in slices of ``n`` (SQLite bounds the number of ``?`` in one statement)."""
    for i in range(0, len(items), n):
        yield items[i : i + n]


class Retention:
    """Disk use and the caps of the journal (see ``prune``)."""

    path: Path
    samples_dir: Path
    _db: sqlite3.Connection
    _lock: threading.RLock

    def _bump(self, name: str, n: int) -> None:  # provided by Journal
        raise NotImplementedError

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
        """Enforce the caps: at most ``max_rows`` decisions and ``max_bytes`` on disk.

        Policy (docs/operations.md): sent decisions go first, oldest first, with their
        samples. If that is not enough (the host has been away): sample images next,
        oldest first, then the oldest *unsent* decisions. Everything unsent that is
        dropped is counted (``dropped_decisions``, ``dropped_samples``: lifetime counters
        in ``counts()``, hence in status and heartbeats) so the host sees the loss.
        Quarantined records count as sent here; open rows (parts in flight) are never
        pruned. Returns what this call removed.
        """
        removed = {"rows": 0, "samples": 0, "bytes_freed": 0, "dropped_decisions": 0,
                   "dropped_samples": 0}
        with self._lock:
            before = self._used_bytes()
            if max_rows is not None:
                total = self._db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
                excess = max(0, int(total) - int(max_rows))
                if excess:
                    self._delete_decisions(self._oldest(excess, sent=True), removed)
                    excess -= removed["rows"]
                if excess > 0:
                    self._delete_decisions(self._oldest(excess, sent=False), removed, unsent=True)
            if max_bytes is not None:
                while self._used_bytes() > max_bytes:
                    ids = self._oldest(200, sent=True)
                    if not ids:
                        break
                    self._delete_decisions(ids, removed)
                    self._db.execute("PRAGMA incremental_vacuum")
                while self._used_bytes() > max_bytes:
                    rows = self._db.execute(
                        "SELECT id, path, sent FROM samples ORDER BY seq LIMIT 50"
                    ).fetchall()
                    if not rows:
                        break
                    self._delete_samples(rows, removed)
                while self._used_bytes() > max_bytes:
                    ids = self._oldest(50, sent=False)
                    if not ids:
                        break
                    self._delete_decisions(ids, removed, unsent=True)
                    self._db.execute("PRAGMA incremental_vacuum")
            if removed["dropped_decisions"] or removed["dropped_samples"]:
                log.warning(
                    "journal: caps reached with the host behind: dropped %d unsent decisions"
                    " and %d unsent samples (counted)",
                    removed["dropped_decisions"],
                    removed["dropped_samples"],
                )
                self._bump("dropped_decisions", removed["dropped_decisions"])
                self._bump("dropped_samples", removed["dropped_samples"])
            self._db.execute("PRAGMA incremental_vacuum")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            removed["bytes_freed"] = max(0, before - self._used_bytes())
        return removed

    def _oldest(self, n: int, sent: bool) -> list[str]:
        # an open row is a part in flight: never pruned (it completes in moments)
        cond = "sent != 0" if sent else "sent = 0 AND state = 'done'"
        return [
            r[0]
            for r in self._db.execute(
                f"SELECT id FROM decisions WHERE {cond} ORDER BY seq LIMIT ?", (int(n),)
            )
        ]

    def _delete_decisions(
        self, ids: list[str], removed: dict[str, int], unsent: bool = False
    ) -> None:
        if not ids:
            return
        for chunk in chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT id, path, sent FROM samples WHERE decision_id IN ({marks})", chunk
            ).fetchall()
            self._delete_samples(rows, removed)
            cur = self._db.execute(f"DELETE FROM decisions WHERE id IN ({marks})", chunk)
            removed["rows"] += cur.rowcount
            if unsent:
                removed["dropped_decisions"] += cur.rowcount

    def _delete_samples(self, rows: list[sqlite3.Row], removed: dict[str, int]) -> None:
        if not rows:
            return
        # Row first, then the file: a crash in between leaves an orphan file, never a
        # row naming a missing file.
        ids = [r["id"] for r in rows]
        marks = ",".join("?" * len(ids))
        self._db.execute(f"DELETE FROM samples WHERE id IN ({marks})", ids)
        removed["dropped_samples"] += sum(1 for r in rows if not r["sent"])
        for r in rows:
            try:
                (self.samples_dir / r["path"]).unlink()
            except FileNotFoundError:
                pass
        removed["samples"] += len(rows)
