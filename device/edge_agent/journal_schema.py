"""The journal's file: what ``journal.sqlite`` holds (the tables, the lifetime counters and
what each means, a row's sync state), its permissions, and how a damaged file is
recognised. ``edge_agent.journal`` reads and writes it; ``docs/architecture.md``,
"Journal contract", is the same for the sync side."""

from __future__ import annotations

import sqlite3

DATA_MODE = 0o640  # journal, samples and status: owner rw, the agent's group r, nobody else


DB_NAME = "journal.sqlite"
DECISIONS = ("ok", "reject", "review")
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
)
SENT, UNSENT, QUARANTINED = 1, 0, 2
CORRUPT = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def is_corrupt(err: BaseException) -> bool:
    """Whether ``err`` says the database file itself is damaged (not full, not read-only)."""
    name = getattr(err, "sqlite_errorname", "") or ""
    return isinstance(err, sqlite3.DatabaseError) and (
        name.startswith(CORRUPT) or "malformed" in str(err) or "not a database" in str(err)
    )
