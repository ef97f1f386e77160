"""The journal says what the line did (issue 37): a pulse is ``done`` only when the output
went active and back; pulses a stop dropped are reconciled and counted; a pulse that went
active late is counted late; the run summary counts pulses that fired."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from devicekit import ROOT, write_config
from gpiozero.pins.mock import MockFactory

from edge_agent.actuator import Actuator
from edge_agent.journal import Journal
from edge_agent.pins import read_pin_log


def test_a_graceful_stop_with_pulses_pending_journals_none_as_done(tmp_path, tiny_bundle):
    """delay 500 ms, 5 rejects, stop after the 5th: no pulse ever fired (the pin's own log
    is empty), so no row says done, all 5 are reconciled, and the summary says 0 pulses."""
    pins = tmp_path / "pins"
    cfg = write_config(tmp_path / "agent.yaml", tiny_bundle,
                       trigger={"type": "interval", "rate_hz": 50, "pin_factory": "mock"},
                       actuator={"delay_ms": 500, "pin_factory": "file"},
                       decision={"threshold": 0.0})
    proc = subprocess.run([sys.executable, "-m", "edge_agent", "run", "--config", str(cfg),
                           "--max-items", "5", "--json"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env={**__import__("os").environ,
                                                      "EDGE_PIN_STATE_DIR": str(pins)})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    rising = [t for t, level in read_pin_log(pins, "GPIO17") if level]
    j = Journal(tmp_path / "journal")
    try:
        rows = [j.get(i) for i in j.ids()]
        counts = j.counts()
        actuation = dict(j._db.execute("SELECT id, actuation FROM decisions").fetchall())
    finally:
        j.close()
    assert rising == [] and summary["pulses"] == 0 and summary["rejects"] == 5
    assert sorted(actuation.values()) == ["unfired"] * 5
    assert counts["reconciled"] == 5
    assert all("before the reject pulse fired" in r["reconciled"] for r in rows)


def test_a_pulse_fired_late_is_counted_late_and_one_on_time_is_done():
    outcomes: list = []
    factory = MockFactory()
    act = Actuator(17, delay_ms=20, pulse_ms=5, pin_factory=factory, on_done=outcomes.extend,
                   late_ms=10)
    try:
        act.schedule(time.monotonic_ns(), tag="on-time")
        time.sleep(0.1)
        with act._cv:  # starve the scheduler thread past the next pulse's due time
            act.schedule(time.monotonic_ns(), tag="late")
            time.sleep(0.06)
        deadline = time.monotonic() + 5
        while len(outcomes) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        act.stop()
    assert outcomes == [("on-time", "done"), ("late", "late")]
    assert act.pulses == 2 and act.late == 1 and act.dropped == 0


def test_a_pulse_cut_short_by_the_safe_state_went_active_so_it_is_not_dropped():
    outcomes: list = []
    act = Actuator(17, delay_ms=1, pulse_ms=500, pin_factory=MockFactory(),
                   on_done=outcomes.extend)
    act.schedule(time.monotonic_ns(), tag="cut")
    act.schedule(time.monotonic_ns() + 10**9, tag="never")
    time.sleep(0.05)
    act.stop()
    assert sorted(outcomes) == [("cut", "done"), ("never", "dropped")]
    assert act.pulses == 1 and act.dropped == 1


def test_sigstop_of_the_agent_mid_pulse_cannot_stretch_the_pulse(tmp_path, tiny_bundle):
    """The guard process times the pulse: the agent frozen by SIGSTOP right after a pulse
    went active, the output still goes back to its safe level pulse_ms later."""
    import os
    import signal

    pins = tmp_path / "pins"
    cfg = write_config(tmp_path / "agent.yaml", tiny_bundle,
                       trigger={"type": "interval", "rate_hz": 20, "pin_factory": "mock"},
                       actuator={"delay_ms": 60, "pulse_ms": 60, "pin_factory": "file"},
                       decision={"threshold": 0.0})
    agent = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(cfg)],
                             cwd=ROOT, env={**os.environ, "EDGE_PIN_STATE_DIR": str(pins)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(level for _, level in read_pin_log(pins, "GPIO17")):
            assert agent.poll() is None, agent.stderr.read()
            assert time.monotonic() < deadline, "no pulse"
            time.sleep(0.002)
        agent.send_signal(signal.SIGSTOP)
        time.sleep(0.6)  # ten pulse widths: a stretched pulse would still be on
        log = read_pin_log(pins, "GPIO17")
        agent.send_signal(signal.SIGCONT)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        agent.stderr.close()
    on = [t for t, level in log if level][-1]
    assert log[-1][1] is False  # the frozen agent's output is at its safe level
    off = next(t for t, level in log if not level and t > on)
    assert (off - on) / 1e6 < 60 + 100


def test_a_read_only_journal_at_stop_keeps_held_decisions_and_the_next_start_commits_them(
        tmp_path, tiny_bundle, monkeypatch):
    """The journal's disk goes read-only mid-run (sqlite says so on every commit): the line
    goes on, decisions are held in memory; at the stop they go to the next folder that
    takes them (the journal's own is gone here: the runtime folder), and the next start
    commits them and counts them. Their images were dropped, and counted."""
    import sqlite3

    from edge_agent import writer as writer_mod
    from edge_agent.config import load_config
    from edge_agent.service import Agent

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setattr(writer_mod, "held_dirs",
                        lambda journal_dir: [tmp_path / "gone", run_dir])
    cfg = load_config(write_config(tmp_path / "agent.yaml", tiny_bundle,
                                   samples={"rate": 1.0}), env={})
    agent = Agent(cfg)
    real = agent.journal.record_many
    calls = {"n": 0}

    def flaky(items, actuation=None):
        calls["n"] += 1
        if calls["n"] > 2:
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return real(items, actuation)

    monkeypatch.setattr(agent.journal, "record_many", flaky)
    try:
        summary = agent.run(max_items=30)
    finally:
        agent.close()
    held = run_dir / "edge-agent-held-test-device.jsonl"
    n_held = len(held.read_text().splitlines())
    assert n_held > 0 and summary["items"] == 30

    again = Agent(load_config(cfg.source, env={}))
    try:
        again.open()
        counts = again.journal.counts()
    finally:
        again.close()
    assert not held.exists()
    assert counts["total"] == 30 and counts["held_recovered"] == n_held
    assert counts["dropped_samples"] == n_held  # held without their images: every one counted


def test_a_verdict_that_reaches_the_plc_late_is_journaled_and_reported_as_the_fail_it_was(
        tmp_path, tiny_bundle, monkeypatch):
    """The race of issue 37: the deadline passes between the decision (station.check said
    in time) and its delivery after the commit. The PLC gets Fail with fault 1 (and acks
    it); the journal row and the reported record (what MQTT publishes) must say so, not
    'ok, in time'."""
    from netkit import free_port
    from plckit import AgentThread
    from pymodbus.client import ModbusTcpClient

    from edge_agent.config import load_config
    from edge_agent.plc.station import Station
    from edge_agent.service import Agent

    real_check = Station.check
    monkeypatch.setattr(Station, "check",
                        lambda self, t: {**real_check(self, t), "late": False})
    port = free_port()
    cfg = load_config(write_config(tmp_path / "agent.yaml", tiny_bundle, trigger="modbus",
                                   actuator={"type": "none"},
                                   plc={"modbus": {"port": port}, "result_deadline_ms": 1}),
                      env={})
    reported: list[dict] = []
    agent = Agent(cfg, on_decision=reported.append)
    run = AgentThread(agent).start()
    client = ModbusTcpClient("127.0.0.1", port=port)
    assert client.connect()
    try:
        client.write_registers(0, [41, 1])
        deadline = time.monotonic() + 10
        ir = client.read_input_registers(0, count=11).registers
        while not ir[1] & (1 << 2) and time.monotonic() < deadline:  # ResultValid
            time.sleep(0.01)
            ir = client.read_input_registers(0, count=11).registers
        client.write_registers(1, [2, 41])  # the PLC acks part 41: delivered
        while not reported and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        client.close()
        run.stop()
        agent.close()
    assert ir[2] == 41 and ir[5] == 1  # the PLC: part 41, fault 1 (timeout)
    assert ir[1] & (1 << 4)            # Fail
    j = Journal(tmp_path / "journal")
    try:
        row = j.get(j.ids()[0])
        counts = j.counts()
    finally:
        j.close()
    for rec in (row, reported[0]):
        assert rec["plc"]["seq"] == 41 and rec["plc"]["late"] is True
        assert rec["plc"]["result"] == "fail" and rec["plc"]["fault"] == 1
        assert rec["action"] == "reject" and rec["deadline_missed"] is True
    assert counts["deadline_misses"] == 1
    assert agent.station.hs.counts["late"] == 1 and agent.station.hs.counts["unknown"] == 0
