"""One record per part (issue 37): every part the agent accepts has a journal row from its
trigger, completed with what the PLC got. Overrun, stopped, duplicate and timed-out parts
have rows; rows a killed agent left open are closed as Fail (fault crash) at the next
start; the counters are the rows'; a journal an older agent wrote opens with nothing lost.
A real pymodbus PLC (``plckit.ModbusPlc``) acks every result it reads: what it acked is
what it received, and that is what each row must say."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from devicekit import ROOT, write_config
from netkit import free_port
from plckit import AgentThread, ModbusPlc, PartCamera

from edge_agent.config import load_config
from edge_agent.journal import Journal
from edge_agent.journal_schema import FORMAT, tally
from edge_agent.service import Agent


def _agent(tmp_path, tiny_bundle, camera=None, **plc):
    port = free_port()
    cfg = load_config(write_config(tmp_path / "agent.yaml", tiny_bundle, trigger="modbus",
                                   actuator={"type": "none"},
                                   plc={"modbus": {"port": port}, **plc}), env={})
    return Agent(cfg, camera=camera or PartCamera(every=3)), port


def _rows(tmp_path):
    j = Journal(tmp_path / "journal")
    try:
        rows = [j.get(i) for i in j.ids()]
        counts, recount = j.counts(), j.recount()
    finally:
        j.close()
    return rows, counts, recount


def _wait(cond, timeout=20.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def _agree(rows, received):
    """Every row is complete and says what the PLC acked for that part, in order."""
    assert all(r["state"] == "done" for r in rows)
    by_t = sorted(rows, key=lambda r: r["t_trigger_ns"])
    said = [(r["plc"]["seq"], r["result"] == "pass", r["plc"]["fault"]) for r in by_t
            if r["plc"]["delivered"]]
    assert said == received


def test_overrun_parts_have_rows_that_say_fail_overrun(tmp_path, tiny_bundle):
    """max_in_flight 2 and a slow camera: 6 triggers at once, 4 overrun. Each has a row
    (Fail, fault overrun, the reason), the PLC got the same, counted in fault_overrun."""
    agent, port = _agent(tmp_path, tiny_bundle, PartCamera(delay_s=0.2),
                         max_in_flight=2, result_deadline_ms=10000)
    run = AgentThread(agent).start()
    plc = ModbusPlc(port).connect()
    try:
        for seq in range(1, 7):
            assert plc.trigger(seq)
        _wait(lambda: len(plc.received) == 6)
    finally:
        run.stop()
        plc.close()
        agent.close()
    rows, counts, recount = _rows(tmp_path)
    assert len(rows) == 6
    over = [r for r in rows if r["fault"] == "overrun"]
    assert len(over) == 4 and all(r["result"] == "fail" and r["plc"]["fault"] == 4
                                  and "max_in_flight" in r["reason"] for r in over)
    _agree(rows, plc.received)
    assert counts["fault_overrun"] == 4 and counts["total"] == 6 and counts["open"] == 0
    assert run.summary["failed"] == counts["failed"]


def test_parts_in_flight_at_a_stop_have_rows_that_say_fail_stopped(tmp_path, tiny_bundle):
    """Three parts, a 1 s camera: the stop comes while they wait. The PLC acks the Fails
    the stop gives them; the rows say Fail, fault stopped, as the PLC got."""
    agent, port = _agent(tmp_path, tiny_bundle, PartCamera(delay_s=1.0),
                         result_deadline_ms=10000)
    run = AgentThread(agent).start()
    plc = ModbusPlc(port).connect()
    try:
        for seq in (11, 12, 13):
            assert plc.trigger(seq)
        _wait(lambda: agent.journal.counts()["open"] == 3)  # written at trigger
        run.stop()
    finally:
        plc.close()
        agent.close()
    rows, counts, _ = _rows(tmp_path)
    stopped = [r for r in rows if r["fault"] == "stopped"]
    assert len(rows) == 3 and len(stopped) >= 2  # the first may have had its verdict
    assert all(r["result"] == "fail" and r["action"] == "reject" for r in stopped)
    _agree(rows, plc.received)
    assert counts["fault_stopped"] == len(stopped) and counts["open"] == 0


def test_a_duplicate_part_number_has_its_own_row(tmp_path, tiny_bundle):
    agent, port = _agent(tmp_path, tiny_bundle, PartCamera(delay_s=0.3),
                         result_deadline_ms=10000)
    run = AgentThread(agent).start()
    plc = ModbusPlc(port).connect()
    try:
        assert plc.trigger(7) and plc.trigger(7)  # the PLC reuses a number in flight
        _wait(lambda: len(plc.received) == 2)
    finally:
        run.stop()
        plc.close()
        agent.close()
    rows, counts, _ = _rows(tmp_path)
    assert len(rows) == 2 and [r["plc"]["seq"] for r in rows] == [7, 7]
    dup = [r for r in rows if r["fault"] == "duplicate"]
    assert len(dup) == 1 and dup[0]["result"] == "fail" and dup[0]["plc"]["fault"] == 6
    _agree(rows, plc.received)
    assert counts["fault_duplicate"] == 1


def test_a_timed_out_part_is_a_late_fail_and_keeps_its_verdict_when_it_comes(
        tmp_path, tiny_bundle):
    """Deadline 30 ms, camera 150 ms: the PLC gets Fail fault 1 before the verdict. The row
    says Fail, timeout, late; the verdict that came after is in it too (label, score)."""
    agent, port = _agent(tmp_path, tiny_bundle, PartCamera(delay_s=0.15),
                         result_deadline_ms=30)
    run = AgentThread(agent).start()
    plc = ModbusPlc(port).connect()
    try:
        assert plc.trigger(21)
        _wait(lambda: len(plc.received) == 1)
        _wait(lambda: agent.stats.items == 1)
    finally:
        run.stop()
        plc.close()
        agent.close()
    rows, counts, _ = _rows(tmp_path)
    assert len(rows) == 1
    r = rows[0]
    assert (r["result"], r["fault"], r["late"], r["plc"]["fault"]) == ("fail", "timeout", True, 1)
    assert r["label"] is not None and r["deadline_missed"] is True
    _agree(rows, plc.received)
    assert counts["late"] == 1 and counts["fault_timeout"] == 1 and counts["failed"] == 1


def test_rows_a_killed_agent_left_open_are_closed_as_fail_crash_at_the_next_start(
        tmp_path, tiny_bundle):
    """``edge-agent run`` killed (SIGKILL) with three parts triggered and no result acked:
    their rows are open on disk; the next start closes them as Fail, fault crash, counted
    in fault_crash (and failed), and none stays open."""
    port = free_port()
    cfg = write_config(tmp_path / "agent.yaml", tiny_bundle, trigger="modbus",
                       actuator={"type": "none"},
                       plc={"modbus": {"port": port}, "result_deadline_ms": 60000})
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(cfg)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=os.environ.copy())
    plc = ModbusPlc(port, ack_delay=lambda: 3600.0)  # reads, never acks
    try:
        plc.connect(timeout=60)
        for seq in (31, 32, 33):
            assert plc.trigger(seq)
        db = tmp_path / "journal" / "journal.sqlite"

        def open_rows() -> int:
            try:
                with sqlite3.connect(db) as c:
                    return c.execute("SELECT COUNT(*) FROM decisions WHERE state = 'open'"
                                     ).fetchone()[0]
            except sqlite3.Error:
                return 0

        _wait(lambda: open_rows() == 3, timeout=60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        plc.close()
    j = Journal(tmp_path / "journal")  # what the next start runs (Agent.open: next test)
    try:
        closed = j.close_open("test restart")
    finally:
        j.close()
    rows, counts, _ = _rows(tmp_path)
    assert len(closed) == 3 and len(rows) == 3
    assert all((r["state"], r["result"], r["fault"]) == ("done", "fail", "crash") for r in rows)
    assert sorted(r["plc"]["seq"] for r in rows) == [31, 32, 33]
    assert counts["fault_crash"] == 3 and counts["failed"] == 3 and counts["open"] == 0


def test_the_next_start_closes_open_rows_itself(tmp_path, tiny_bundle):
    """Agent.open() (what every start runs) closes rows left open, before the line runs."""
    j = Journal(tmp_path / "journal")
    j.record({"id": "left-open", "decision": "reject", "action": "reject", "state": "open",
              "t_trigger_ns": 1, "plc": {"seq": 5}})
    j.close()
    cfg = load_config(write_config(tmp_path / "agent.yaml", tiny_bundle), env={})
    agent = Agent(cfg)
    try:
        agent.open()
        row = agent.journal.get("left-open")
        counts = agent.journal.counts()
    finally:
        agent.close()
    assert (row["state"], row["result"], row["fault"]) == ("done", "fail", "crash")
    assert counts["fault_crash"] == 1 and counts["open"] == 0 and counts["total"] == 1


def test_the_counts_are_the_rows_and_the_run_counts_the_completed_records(
        tmp_path, tiny_bundle):
    """A line without a PLC: 20 parts, every one a row from its trigger; the lifetime
    counters equal a recount of the rows (journal_schema.tally), and the run's summary is
    the same tally of the same records."""
    cfg = load_config(write_config(tmp_path / "agent.yaml", tiny_bundle,
                                   decision={"threshold": 0.5}), env={})
    agent = Agent(cfg)
    try:
        summary = agent.run(max_items=20)
    finally:
        agent.close()
    rows, counts, recount = _rows(tmp_path)
    assert len(rows) == 20 and all(r["state"] == "done" for r in rows)
    for name, n in recount.items():
        assert counts[name] == n, name
    assert summary["ok"] + summary["rejects"] + summary["reviews"] == counts["total"] == 20
    assert summary["passed"] == counts["passed"] and summary["failed"] == counts["failed"]
    assert sum(1 for r in rows if r["result"] == "fail") == counts["failed"]


OLD_SCHEMA = """
CREATE TABLE decisions (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    ts REAL NOT NULL, decision TEXT NOT NULL, deadline_missed INTEGER NOT NULL DEFAULT 0,
    sent INTEGER NOT NULL DEFAULT 0, actuation TEXT, body TEXT NOT NULL);
CREATE INDEX decisions_sent ON decisions (sent, seq);
CREATE TABLE samples (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    decision_id TEXT NOT NULL, path TEXT NOT NULL, bytes INTEGER NOT NULL, ts REAL NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def test_a_journal_an_older_agent_wrote_opens_with_nothing_lost(tmp_path):
    """Format 1 (main before this change: no line state, rows written at decision): the
    agent opens it, every row and counter is still there, the rows read as completed
    with what the line did (a late PLC verdict as a late Fail), the unsent ones still sync,
    and the new counters start from the rows."""
    db = tmp_path / "journal" / "journal.sqlite"
    db.parent.mkdir()
    old = sqlite3.connect(db)
    old.executescript(OLD_SCHEMA)
    bodies = [
        {"id": "a", "seq": 1, "ts": 1.0, "item": 1, "decision": "ok", "action": "pass",
         "label": "good", "deadline_missed": False},
        {"id": "b", "seq": 2, "ts": 2.0, "item": 2, "decision": "reject", "action": "reject",
         "label": "scratch", "deadline_missed": False},
        {"id": "c", "seq": 3, "ts": 3.0, "item": 3, "decision": "ok", "action": "reject",
         "label": "good", "deadline_missed": True,
         "plc": {"seq": 9, "late": True, "result": "fail", "fault": 1}},
    ]
    for b, sent in zip(bodies, (1, 0, 0), strict=True):
        old.execute("INSERT INTO decisions (id, ts, decision, deadline_missed, sent,"
                    " actuation, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (b["id"], b["ts"], b["decision"], int(b["deadline_missed"]), sent,
                     "done" if b["decision"] == "reject" else None, json.dumps(b)))
    old.executemany("INSERT INTO counters VALUES (?, ?)",
                    [("total", 40), ("ok", 30), ("reject", 8), ("review", 2),
                     ("deadline_misses", 1), ("reconciled", 3)])
    old.commit()
    old.close()

    j = Journal(db)
    try:
        assert j.migrated_from == 0
        assert [j.get(i) for i in j.ids()] == bodies  # bodies as they were
        counts = j.counts()
        assert {k: counts[k] for k in ("total", "ok", "reject", "review", "deadline_misses",
                                       "reconciled")} == {
            "total": 40, "ok": 30, "reject": 8, "review": 2, "deadline_misses": 1,
            "reconciled": 3}  # lifetime counters untouched
        assert counts["passed"] == 1 and counts["failed"] == 2 and counts["late"] == 1
        assert counts["fault_timeout"] == 1 and counts["open"] == 0
        cols = dict(((r[0]), tuple(r[1:])) for r in j._db.execute(
            "SELECT id, state, result, fault, late FROM decisions"))
        assert cols == {"a": ("done", "pass", None, 0), "b": ("done", "fail", None, 0),
                        "c": ("done", "fail", "timeout", 1)}
        assert [r["id"] for r in j.unsent()] == ["b", "c"]
        assert j._db.execute("PRAGMA user_version").fetchone()[0] == FORMAT
        j.record({"id": "d", "decision": "ok", "action": "pass", "state": "done",
                  "result": "pass"})
    finally:
        j.close()
    again = Journal(db)  # a second open changes nothing
    try:
        assert again.migrated_from == FORMAT and again.counts()["passed"] == 2
        assert again.counts()["total"] == 41 and len(again.ids()) == 4
    finally:
        again.close()
    assert tally({"state": "open", "decision": "reject"}) == []
