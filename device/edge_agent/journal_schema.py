"""The journal's file: what ``journal.sqlite`` holds (the tables, the lifetime counters and
what each means, a row's sync state and line state), its permissions, how a damaged file is
recognised, and how a journal written by an older agent is brought up to this format
(``migrate``). ``edge_agent.journal`` reads and writes it; ``docs/architecture.md``,
"Journal contract", is the same for the sync side.

One row per part (format 2): written ``open`` when the part is triggered, completed
(``done``) when its verdict is delivered. A completed row says what the line did:
``result`` pass | fail, ``fault`` (None, or a name of ``FAULTS``), ``late`` (the verdict
came after the part's deadline: the PLC got a Fail). The counters a completed row adds
are ``tally(row)``: the journal bumps them in the transaction that changes the row, by the
change, so the counters are what the rows say (``Journal.recount`` checks it)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

DATA_MODE = 0o640  # journal, samples and status: owner rw, the agent's group r, nobody else


DB_NAME = "journal.sqlite"
DECISIONS = ("ok", "reject", "review")
FORMAT = 2  # PRAGMA user_version of a journal this agent writes (1: before rows per part)
OPEN, DONE = "open", "done"  # a row's line state
RESULTS = ("pass", "fail")
# Why a part failed without its verdict, or with one (the PLC's fault codes by name,
# edge_agent.plc.handshake.FAULT_NAMES, plus crash: a row a dead agent left open).
FAULTS = ("timeout", "unclassifiable", "stopped", "overrun", "link", "duplicate", "crash")
SYNCHRONOUS = ("full", "normal")
SAMPLE_FORMATS = {"jpeg": ".jpg", "png": ".png"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    ts REAL NOT NULL,
    decision TEXT NOT NULL,
    deadline_missed INTEGER NOT NULL DEFAULT 0,
    sent INTEGER NOT NULL DEFAULT 0,
    actuation TEXT,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'done',
    result TEXT,
    fault TEXT,
    late INTEGER NOT NULL DEFAULT 0
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

COUNTERS = (
    "total",
    "ok",
    "reject",
    "review",
    "deadline_misses",
    "reconciled",  # rejects whose pulse a dead agent left unconfirmed or a stop dropped
    "late_pulses",  # pulses that went active later than the actuator's tolerance
    "actuated_before_journal",  # pulses fired while the journal could not be written
    "dropped_decisions",  # unsent decisions dropped by the caps (the host never sees them)
    "dropped_samples",  # unsent sample images dropped by the caps or a full disk
    "quarantined",  # records the host refused (kept, not sent again)
    "held_recovered",  # decisions a stop kept outside a faulted journal, committed later
    "passed",  # completed rows: the line passed the part
    "failed",  # completed rows: the line failed (rejected) the part, with a verdict or not
    "late",  # completed rows whose verdict came after the part's deadline (PLC: fault 1)
) + tuple(f"fault_{f}" for f in FAULTS)  # completed rows failed with that fault
# Columns added by format 2, for a journal an older agent wrote (``migrate``).
_ADDED = (
    ("state", "TEXT NOT NULL DEFAULT 'done'"),
    ("result", "TEXT"),
    ("fault", "TEXT"),
    ("late", "INTEGER NOT NULL DEFAULT 0"),
)
SENT, UNSENT, QUARANTINED = 1, 0, 2
CORRUPT = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def is_corrupt(err: BaseException) -> bool:
    """Whether ``err`` says the database file itself is damaged (not full, not read-only)."""
    name = getattr(err, "sqlite_errorname", "") or ""
    return isinstance(err, sqlite3.DatabaseError) and (
        name.startswith(CORRUPT) or "malformed" in str(err) or "not a database" in str(err)
    )


def tally(row: Mapping[str, Any]) -> list[str]:
    """The counters one row adds (a record dict or a ``decisions`` row): none while it is
    open; a completed row counts in ``total``, its decision kind, ``passed``/``failed``,
    ``late``, ``fault_<name>`` and ``deadline_misses``."""
    if row.get("state", DONE) != DONE:
        return []
    out = ["total", str(row["decision"]), "passed" if row.get("result") == "pass" else "failed"]
    if row.get("late"):
        out.append("late")
    if row.get("fault"):
        out.append(f"fault_{row['fault']}")
    if row.get("deadline_missed"):
        out.append("deadline_misses")
    return out


def line_fields(rec: Mapping[str, Any]) -> tuple[str, str | None, str | None, int]:
    """``(state, result, fault, late)`` columns of a record (an older record, without them,
    is a completed one: its ``action`` is what the line did)."""
    state = str(rec.get("state") or DONE)
    result = rec.get("result")
    if result is None and state == DONE:
        action = rec.get("action") or ("pass" if rec.get("decision") == "ok" else "reject")
        result = "fail" if action == "reject" else "pass"
    return state, result, rec.get("fault"), int(bool(rec.get("late")))


def migrate(db: sqlite3.Connection) -> int:
    """Bring a journal an older agent wrote up to ``FORMAT``, in one transaction; returns
    the format it had. Nothing is dropped: format 1 rows become completed rows (what the
    line did is their ``action``; a verdict the PLC got late says ``plc.late``), and the
    new counters start from the rows still stored."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    cols = {r[1] for r in db.execute("PRAGMA table_info(decisions)")}
    if version >= FORMAT and all(c in cols for c, _ in _ADDED):
        return version
    db.execute("BEGIN IMMEDIATE")
    try:
        if "actuation" not in cols:  # a journal from before write-ahead actuation
            db.execute("ALTER TABLE decisions ADD COLUMN actuation TEXT")
        for name, decl in _ADDED:
            if name not in cols:
                db.execute(f"ALTER TABLE decisions ADD COLUMN {name} {decl}")
        rows = db.execute("SELECT seq, decision, body FROM decisions"
                          " WHERE result IS NULL").fetchall()
        bumps: dict[str, int] = {}
        for seq, decision, body in rows:
            try:
                rec = json.loads(body)
            except ValueError:
                rec = {}
            plc = rec.get("plc") if isinstance(rec.get("plc"), dict) else {}
            late = bool(plc.get("late"))
            fault = "timeout" if late else ("unclassifiable" if rec.get("error") else None)
            action = rec.get("action") or ("pass" if decision == "ok" else "reject")
            result = "fail" if late or action == "reject" else "pass"
            db.execute("UPDATE decisions SET state = ?, result = ?, fault = ?, late = ?"
                       " WHERE seq = ?", (DONE, result, fault, int(late), seq))
            row = {"state": DONE, "decision": decision, "result": result, "fault": fault,
                   "late": late}
            for name in tally(row):
                if name not in ("total", "ok", "reject", "review", "deadline_misses"):
                    bumps[name] = bumps.get(name, 0) + 1  # the older counters kept theirs
        db.executemany("INSERT OR IGNORE INTO counters (name, value) VALUES (?, 0)",
                       [(c,) for c in COUNTERS])
        db.executemany("UPDATE counters SET value = value + ? WHERE name = ?",
                       [(n, name) for name, n in bumps.items()])
        db.execute(f"PRAGMA user_version = {FORMAT}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return version


def json_default(obj: Any) -> Any:
    """How a record's numpy values are stored in its JSON body (``json.dumps(default=)``)."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
