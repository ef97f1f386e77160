"""The durable journal of decisions and samples: SQLite (WAL) plus a samples folder.

Contract (docs/architecture.md, "Journal contract"): ``record`` writes and commits a
decision before it returns, so anything the agent reports (logs, status, actuation
report) is already on disk; sync reads ``unsent`` batches and ``mark_sent`` them;
``prune`` bounds disk use: samples first, then the oldest decisions (sent ones before
unsent ones), counting every unsent thing it drops so the host sees the loss.

One row per part (format 2, ``journal_schema``): the writer records a part ``open`` when it
is triggered, adds its verdict, and completes it (``done``: ``result``, ``fault``, ``late``)
when the verdict is delivered; ``record_many`` replaces a row by its id and moves the
counters by what the change adds, in the same transaction. ``close_open`` (at start)
closes what a dead process left open as Fail, fault ``crash``. Only completed rows are
synced. A journal an older agent wrote is migrated when opened (``journal_schema.migrate``).

Write-ahead actuation: a reject is committed with ``actuation = 'pending'`` before its
pulse is scheduled; ``mark_actuated`` closes it once the pulse has ended. ``reconcile``
(at start) closes what a dead process left pending as ``unconfirmed``: the item was
decided reject but its pulse may not have fired; it stays counted as a reject and the
reason is journaled. ``quarantine`` parks a record the host refuses (a poison record).

A file that is not a database (or fails ``PRAGMA quick_check``) is moved aside as
``journal.sqlite.corrupt-<UTC time>`` and a fresh journal started (``recovered``).

Durability: WAL with ``synchronous=FULL`` by default (each commit is fsynced: survives
power loss); ``normal`` survives a process kill (SIGKILL, crash) but may lose the last
commits on power loss, at a fraction of the cost on an SD card.

One connection guarded by a lock serves every thread of the process (the main loop
records, the sync worker reads and marks); other processes may open the same file
(WAL allows concurrent readers).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent import journal_file
from edge_agent.journal_schema import (
    DECISIONS,
    DONE,
    FAULTS,
    OPEN,
    QUARANTINED,
    RESULTS,
    SAMPLE_FORMATS,
    SYNCHRONOUS,
    UNSENT,
    is_corrupt,
    json_default,
    line_fields,
    tally,
)
from edge_agent.retention import Retention, chunks
from edge_agent.samples import write_sample
from edge_common.errors import ConfigError

log = logging.getLogger(__name__)


class Journal(Retention):
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
        p = journal_file.database_path(path)
        self._sample_warned = 0.0  # monotonic time of the last "sample not kept" line
        if synchronous not in SYNCHRONOUS:
            raise ConfigError(f"journal.synchronous: must be one of {', '.join(SYNCHRONOUS)}")
        if sample_format not in SAMPLE_FORMATS:
            raise ConfigError(f"samples.format: must be one of {', '.join(SAMPLE_FORMATS)}")
        journal_file.create(p)
        self.path = p
        self.samples_dir = Path(samples_dir) if samples_dir else p.parent / "samples"
        self.sample_format = sample_format
        self.synchronous = synchronous
        self.recovered: str | None = None  # where a corrupt file was moved, if one was
        self._lock = threading.RLock()
        try:
            self._db = self._connect(check=True)
        except sqlite3.DatabaseError as err:
            if not is_corrupt(err):
                raise
            self.recover(str(err))

    def _connect(self, check: bool = False) -> sqlite3.Connection:
        db, self.migrated_from = journal_file.connect(self.path, self.synchronous, check)
        return db

    def recover(self, reason: str) -> Path:
        """Move a corrupt database (and its WAL/SHM) aside and start a fresh one.

        Returns where the old file went. The samples folder stays: its files are
        harmless, and a person may still want them.
        """
        with self._lock:
            old = getattr(self, "_db", None)
            if old is not None:
                try:
                    old.close()
                except sqlite3.Error:
                    pass
            aside = journal_file.move_aside(self.path)
            log.error("journal: %s is corrupt (%s); moved to %s, started a fresh journal",
                      self.path, reason, aside)
            self.recovered = str(aside)
            self._db = self._connect()
            return aside

    # -- writing -----------------------------------------------------------------------

    def record(self, decision: dict[str, Any], image: np.ndarray | None = None) -> str:
        """Write one decision (and its sample image, if given); commit; return its id.

        ``decision`` carries the record fields (``ts, item, label, score, probs, decision,
        truth, model_version, latency_ms, deadline_missed``); ``id`` (UUID4) and ``seq``
        are assigned here unless ``id`` is given. With ``image``, the sample file is
        written (atomically) before the row that names it is committed.
        """
        return self.record_many([(decision, image)])[0]

    def record_many(
        self,
        items: Sequence[tuple[dict[str, Any], np.ndarray | None]],
        actuation: dict[str, str] | None = None,
    ) -> list[str]:
        """Like :meth:`record` for several records in one transaction (one fsync).

        A record whose ``id`` is stored already replaces it (one row per part: written
        ``open`` at trigger, then its verdict, then ``done`` at delivery); a completed row
        is never opened again (a retried older write). The counters change by what the
        row's change adds (``journal_schema.tally``), in the same transaction.
        All or nothing: if any record is invalid, none is written. The agent's journal
        writer uses it to commit whatever queued up while the previous commit was syncing.
        ``actuation`` maps record ids (given in the records) to their actuation state
        (``pending`` for a reject whose pulse is scheduled once this returns).
        A sample image that cannot be written (disk full) is dropped, the decision kept.
        """
        actuation = actuation or {}
        prepared = [self._prepare(d, img) for d, img in items]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                bumps: dict[str, int] = {}
                for rec, sample_row in prepared:
                    self._upsert(rec, sample_row, actuation.get(rec["id"]), bumps)
                self._db.executemany(
                    "UPDATE counters SET value = value + ? WHERE name = ?",
                    [(n, b) for b, n in bumps.items() if n],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return [rec["id"] for rec, _ in prepared]

    def _upsert(self, rec: dict[str, Any], sample_row: tuple[str, str, str, int, float] | None,
                act: str | None, bumps: dict[str, int]) -> None:
        """Write one record (insert, or replace the row with its id); add to ``bumps`` what
        the change adds to the counters. Inside the caller's transaction."""
        state, result, fault, late = line_fields(rec)
        old = self._db.execute(
            "SELECT seq, state, decision, result, fault, late, deadline_missed, actuation,"
            " json_extract(body, '$.sample_dropped') AS sd FROM decisions WHERE id = ?",
            (rec["id"],),
        ).fetchone()
        events: list[str] = []
        if old is None:
            cur = self._db.execute(
                "INSERT INTO decisions (id, ts, decision, deadline_missed, actuation, state,"
                " result, fault, late, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '{}')",
                (rec["id"], float(rec["ts"]), rec["decision"], int(rec["deadline_missed"]),
                 act, state, result, fault, late),
            )
            rec["seq"] = int(cur.lastrowid or 0)
            self._db.execute("UPDATE decisions SET body = ? WHERE seq = ?",
                             (json.dumps(rec, default=json_default), rec["seq"]))
            before: list[str] = []
            events += ["actuated_before_journal"] if act == "before_journal" else []
            events += ["dropped_samples"] if rec.get("sample_dropped") else []
        else:
            if old["state"] == DONE and state == OPEN:
                return  # a retried older write: a completed row is never opened again
            rec["seq"] = int(old["seq"])
            self._db.execute(
                "UPDATE decisions SET ts = ?, decision = ?, deadline_missed = ?, actuation ="
                " COALESCE(?, actuation), state = ?, result = ?, fault = ?, late = ?, body = ?"
                " WHERE seq = ?",
                (float(rec["ts"]), rec["decision"], int(rec["deadline_missed"]), act, state,
                 result, fault, late, json.dumps(rec, default=json_default), rec["seq"]),
            )
            before = tally(dict(old))
            if act == "before_journal" and old["actuation"] != "before_journal":
                events.append("actuated_before_journal")
            if rec.get("sample_dropped") and not old["sd"]:
                events.append("dropped_samples")
        if sample_row is not None:
            self._db.execute(
                "INSERT OR IGNORE INTO samples (id, decision_id, path, bytes, ts)"
                " VALUES (?, ?, ?, ?, ?)",
                sample_row,
            )
        for b in tally({**rec, "state": state, "result": result, "fault": fault,
                        "late": late}) + events:
            bumps[b] = bumps.get(b, 0) + 1
        for b in before:
            bumps[b] = bumps.get(b, 0) - 1

    def _prepare(
        self, decision: dict[str, Any], image: np.ndarray | None
    ) -> tuple[dict[str, Any], tuple[str, str, str, int, float] | None]:
        rec = dict(decision)
        rec["id"] = str(rec.get("id") or uuid.uuid4())
        rec.setdefault("ts", time.time())
        if rec.get("decision") not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {rec.get('decision')!r}")
        if rec.get("state", DONE) not in (OPEN, DONE):
            raise ValueError(f"state must be {OPEN} or {DONE}, got {rec.get('state')!r}")
        if rec.get("result") is not None and rec["result"] not in RESULTS:
            raise ValueError(f"result must be one of {RESULTS}, got {rec.get('result')!r}")
        if rec.get("fault") is not None and rec["fault"] not in FAULTS:
            raise ValueError(f"fault must be None or one of {FAULTS}, got {rec.get('fault')!r}")
        rec["deadline_missed"] = bool(rec.get("deadline_missed", False))
        sample_row = None
        if image is not None:
            try:
                rel, size = write_sample(self.samples_dir, self.sample_format, rec["id"],
                                         float(rec["ts"]), image)
            except OSError as err:  # disk full or read-only: samples go first
                now = time.monotonic()
                if now - self._sample_warned > 60:  # one line a minute, every drop counted
                    self._sample_warned = now
                    log.warning("journal: sample for %s not kept: %s (counted in "
                                "dropped_samples)", rec["id"], err)
                rec["sample"] = None
                rec["sample_dropped"] = True
                return rec, None
            rec["sample"] = rel
            sample_row = (str(uuid.uuid4()), rec["id"], rel, size, float(rec["ts"]))
        else:
            rec.setdefault("sample", None)
        return rec, sample_row

    def mark_sent(self, ids: Iterable[str]) -> int:
        """Mark decisions as delivered to the host; unknown ids are ignored. Returns count."""
        return self._mark("decisions", ids)

    def mark_samples_sent(self, ids: Iterable[str]) -> int:
        """Mark sample files as uploaded; unknown ids are ignored. Returns count."""
        return self._mark("samples", ids)

    def mark_actuated(self, outcomes: dict[str, str],
                      dropped_reason: str = "reject pulse dropped before it fired") -> int:
        """Close pending actuations: ``{id: 'done' | 'late' | 'missed' | 'dropped'}``.

        ``done``: the output went active and back. ``late``: the same, later than the
        actuator's tolerance (counter ``late_pulses``). ``missed``: its commit came after
        the pulse was due, no pulse (a deadline miss). ``dropped``: a stop or a fault drove
        the output safe before it fired: ``unfired``, ``dropped_reason`` in the record, still
        a reject, counted in ``reconciled``. Never ``done`` without a pulse."""
        if not outcomes:
            return 0
        stored = {"done": "done", "late": "late", "missed": "missed", "dropped": "unfired"}
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = 0
                bumps = {"deadline_misses": 0, "late": 0, "late_pulses": 0, "reconciled": 0}
                for rec_id, outcome in outcomes.items():
                    cur = self._db.execute(
                        "UPDATE decisions SET actuation = ? WHERE id = ? AND actuation = 'pending'",
                        (stored[outcome], rec_id),
                    )
                    n += cur.rowcount
                    if not cur.rowcount:
                        continue
                    if outcome == "missed":
                        # counted now if the row is complete; an open one counts it when
                        # it completes (tally: the row says deadline_missed)
                        row = self._db.execute(
                            "SELECT late FROM decisions WHERE id = ? AND deadline_missed = 0"
                            " AND state = 'done'", (rec_id,)).fetchone()
                        if row is not None:  # its verdict came after the pulse was due
                            self._db.execute(
                                "UPDATE decisions SET deadline_missed = 1, late = 1, body ="
                                " json_set(body, '$.deadline_missed', json('true'), '$.late',"
                                " json('true')) WHERE id = ?", (rec_id,))
                            bumps["deadline_misses"] += 1
                            bumps["late"] += 0 if row["late"] else 1
                        self._db.execute(
                            "UPDATE decisions SET deadline_missed = 1, body = json_set(body,"
                            " '$.deadline_missed', json('true')) WHERE id = ? AND"
                            " state = 'open'", (rec_id,))
                    elif outcome == "late":
                        bumps["late_pulses"] += 1
                    elif outcome == "dropped":
                        bumps["reconciled"] += 1
                        self._db.execute(
                            "UPDATE decisions SET body = json_set(body, '$.reconciled', ?)"
                            " WHERE id = ?", (dropped_reason, rec_id))
                for name, k in bumps.items():
                    if k:
                        self._bump(name, k)
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return n

    def close_open(self, reason: str) -> list[dict[str, Any]]:
        """Close every row a dead agent left open (run at start, after ``reconcile``): the
        part was triggered and its verdict never delivered, so the line failed it: result
        fail, fault ``crash``, ``reason`` in the record, counted (``failed``, ``reject``
        unless it had a verdict, ``fault_crash``). Returns the closed records."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM decisions WHERE state = 'open' ORDER BY seq").fetchall()
            closed = []
            for r in rows:
                rec = json.loads(r["body"])
                rec.update(state=DONE, result="fail", fault="crash", late=False,
                           action="reject", reconciled=reason)
                if isinstance(rec.get("plc"), dict):
                    rec["plc"] = {**rec["plc"], "result": "fail", "fault": None,
                                  "fault_name": "crash", "delivered": False}
                closed.append(rec)
        if closed:
            self.record_many([(rec, None) for rec in closed])
        return closed

    def recount(self) -> dict[str, int]:
        """The counters ``tally`` gives for the rows stored now (what ``counts`` would say
        if nothing had been pruned): the check that counters are the rows'."""
        out: dict[str, int] = {}
        with self._lock:
            for row in self._db.execute(
                "SELECT state, decision, result, fault, late, deadline_missed FROM decisions"
            ):
                for name in tally(dict(row)):
                    out[name] = out.get(name, 0) + 1
        return out

    def pending_actuations(self) -> list[str]:
        """Ids of rejects committed but whose pulse was never confirmed, oldest first."""
        with self._lock:
            return [
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM decisions WHERE actuation = 'pending' ORDER BY seq"
                )
            ]

    def reconcile(self, reason: str) -> int:
        """Close every pending actuation as ``unconfirmed`` with ``reason`` in its record
        (run at start: a dead agent's in-flight rejects). They stay counted as rejects;
        the ``reconciled`` counter shows how many. Returns the count."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "UPDATE decisions SET actuation = 'unconfirmed', body = json_set(body,"
                    " '$.reconciled', ?) WHERE actuation = 'pending'",
                    (reason,),
                )
                n = int(cur.rowcount)
                if n:
                    self._bump("reconciled", n)
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return n

    def quarantine(self, rec_id: str, reason: str) -> bool:
        """Park a record the host refuses: kept, counted, never sent again."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "UPDATE decisions SET sent = ?, body = json_set(body, '$.quarantined', ?)"
                    " WHERE id = ? AND sent = ?",
                    (QUARANTINED, reason, rec_id, UNSENT),
                )
                if cur.rowcount:
                    self._bump("quarantined", 1)
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return bool(cur.rowcount)

    def quarantined(self) -> list[dict[str, Any]]:
        """The records the host refused, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM decisions WHERE sent = ? ORDER BY seq", (QUARANTINED,)
            ).fetchall()
        return [json.loads(r["body"]) for r in rows]

    def _rollback(self) -> None:
        # SQLite rolls back by itself on some errors (disk full, I/O): a second ROLLBACK
        # would raise and hide the real error.
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def checkpoint(self) -> None:
        """Fold the WAL back into the database and truncate it (frees disk space)."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def bump(self, name: str, n: int) -> None:
        """Add ``n`` to a lifetime counter, in its own transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._bump(name, n)
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _bump(self, name: str, n: int) -> None:
        self._db.execute("UPDATE counters SET value = value + ? WHERE name = ?", (n, name))

    def _mark(self, table: str, ids: Iterable[str]) -> int:
        ids = list(ids)
        if not ids:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = 0
                for chunk in chunks(ids, 500):
                    marks = ",".join("?" * len(chunk))
                    cur = self._db.execute(
                        f"UPDATE {table} SET sent = 1 WHERE sent = 0 AND id IN ({marks})", chunk
                    )
                    n += cur.rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return n

    # -- reading -----------------------------------------------------------------------

    def unsent(self, limit: int = 100) -> list[dict[str, Any]]:
        """The oldest ``limit`` completed decisions not yet marked sent, oldest first (an
        open row waits for its verdict's delivery: the host gets what the line did)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM decisions WHERE sent = 0 AND state = 'done' ORDER BY seq"
                " LIMIT ?", (int(limit),)
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

    def last_completed(self, n: int) -> list[dict[str, Any]]:
        """The ``n`` newest completed records, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM decisions WHERE state = 'done' ORDER BY seq DESC LIMIT ?",
                (int(n),)).fetchall()
        return [json.loads(r["body"]) for r in reversed(rows)]

    def ids(self) -> list[str]:
        """Every decision id currently stored, oldest first."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM decisions ORDER BY seq")]

    def counts(self) -> dict[str, int]:
        """Lifetime totals (``journal_schema.COUNTERS``: ``total, ok, reject, review,
        passed, failed, late, fault_<name>, deadline_misses`` counted from completed rows,
        and ``reconciled, actuated_before_journal, dropped_decisions, dropped_samples,
        quarantined, held_recovered``; they survive pruning), plus ``unsent``, ``rows``,
        ``open`` (parts triggered, verdict not yet delivered) and ``pending`` (actuations
        not yet confirmed) currently stored."""
        with self._lock:
            out = {r["name"]: int(r["value"]) for r in self._db.execute("SELECT * FROM counters")}
            out["unsent"] = int(
                self._db.execute("SELECT COUNT(*) FROM decisions WHERE sent = 0").fetchone()[0]
            )
            out["rows"] = int(self._db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])
            out["open"] = int(self._db.execute(
                "SELECT COUNT(*) FROM decisions WHERE state = 'open'").fetchone()[0])
            out["pending"] = int(
                self._db.execute(
                    "SELECT COUNT(*) FROM decisions WHERE actuation = 'pending'"
                ).fetchone()[0]
            )
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
