"""Journal faults never stop the line: a full disk and a read-only journal (a real tmpfs the
test mounts; we run as root), a corrupt file; caps under a host outage; a poison record."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from devicekit import frame, write_config
from gpiozero.pins.mock import MockFactory
from test_actuator import ListCamera

from edge_agent.config import load_config
from edge_agent.hostclient import HostClient
from edge_agent.journal import Journal
from edge_agent.service import Agent
from edge_agent.sync import SyncWorker, attach


@pytest.fixture
def tmpfs(tmp_path):
    """An 8 MiB tmpfs mounted for this test (a real filesystem that can fill up)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {out.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path) -> Path:
    filler = mnt / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC
    return filler


def _agent(tmp_path, bundle, jdir, journal=None, **sections):
    cfg = load_config(
        write_config(
            tmp_path / "agent.yaml",
            bundle,
            trigger={"type": "interval", "rate_hz": 20, "pin_factory": "mock"},
            actuator={"delay_ms": 150, "pulse_ms": 10},
            journal={"dir": str(jdir), "synchronous": "full", "status_every_s": 0.2,
                     **(journal or {})},
            samples={"rate": 1.0},
            **sections,
        ),
        env={},
    )
    factory = MockFactory()
    agent = Agent(cfg, pin_factory=factory, camera=ListCamera([frame("red")]))
    return agent, factory.pin(17)


def _run(agent, seconds, during=None):
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(agent.run(duration=seconds)))
    t.start()
    if during:
        during()
    t.join(timeout=60)
    assert not t.is_alive()
    return out


def _ons(pin) -> int:
    return sum(1 for s in pin.states if s.state)


def test_disk_full_keeps_rejecting_raises_a_fault_and_catches_up(tmp_path, tiny_bundle, tmpfs):
    agent, pin = _agent(tmp_path, tiny_bundle, tmpfs / "journal")
    filler = _fill(tmpfs)
    faults = []

    def during():
        time.sleep(1.0)
        faults.append(dict(agent.snapshot()["faults"]))
        filler.unlink()  # the operator frees space: the held decisions are committed
        time.sleep(1.5)

    try:
        summary = _run(agent, 3.0, during)
        assert "journal" in faults[0] and "full" in faults[0]["journal"]
        assert summary["items"] >= 20 and summary["rejects"] == summary["items"]
        assert _ons(pin) >= summary["items"] - 4  # still rejecting (the last few cut by stop)
        counts = agent.journal.counts()
        assert counts["total"] == summary["items"]  # nothing lost once space came back
        assert counts["actuated_before_journal"] >= 1
        assert "journal" not in agent.snapshot()["faults"]
    finally:
        agent.close()


def test_read_only_journal_keeps_rejecting_and_raises_a_fault(
    tmp_path, tiny_bundle, tmpfs, monkeypatch
):
    # A filesystem remounted read-only (as after I/O errors) under an existing journal.
    j = Journal(tmpfs / "journal")
    old = j.record({"decision": "ok"})
    j.close()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    agent, pin = _agent(tmp_path, tiny_bundle, tmpfs / "journal")
    try:
        assert agent.faults["journal_open"].startswith("cannot open the journal in ")
        summary = agent.run(max_items=10)
        assert summary["rejects"] == summary["items"] == 10
        assert _ons(pin) >= 10 - 4  # the last few are cut by the stop
        # Journaled to the fallback in the runtime folder, synced from there.
        assert agent.journal.path.parent == tmp_path / "run" / "edge-agent-journal-test-device"
        assert agent.journal.counts()["total"] == 10
        assert "cannot open the journal" in agent.snapshot()["faults"]["journal_open"]
    finally:
        agent.close()
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=False)
    j = Journal(tmpfs / "journal")
    assert j.ids() == [old]  # the read-only one untouched
    j.close()


def test_corrupt_journal_is_moved_aside_and_a_fresh_one_started(tmp_path, tiny_bundle):
    jdir = tmp_path / "journal"
    jdir.mkdir()
    garbage = os.urandom(8192)
    (jdir / "journal.sqlite").write_bytes(garbage)
    agent, pin = _agent(tmp_path, tiny_bundle, jdir)
    try:
        assert "journal_corrupt" in agent.faults
        summary = agent.run(max_items=5)
        assert summary["items"] == 5 and agent.journal.counts()["total"] == 5
        aside = list(jdir.glob("journal.sqlite.corrupt-*"))
        assert len(aside) == 1 and aside[0].read_bytes() == garbage
    finally:
        agent.close()


def test_a_journal_damaged_inside_is_caught_at_open(tmp_path):
    j = Journal(tmp_path / "j")
    for i in range(300):
        j.record({"decision": "ok", "item": i, "pad": "x" * 200})
    j.close()
    db = tmp_path / "j" / "journal.sqlite"
    data = bytearray(db.read_bytes())
    data[4096 * 3 : 4096 * 6] = os.urandom(4096 * 3)  # pages in the middle
    db.write_bytes(bytes(data))
    j = Journal(tmp_path / "j")
    try:
        assert j.recovered and Path(j.recovered).exists()
        assert j.counts()["total"] == 0
        j.record({"decision": "reject"})
        assert j.counts()["reject"] == 1
    finally:
        j.close()


def test_sample_write_failure_drops_the_sample_and_keeps_the_decision(tmp_path, monkeypatch):
    import edge_agent.samples as samples_mod

    def full(*_a, **_kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    j = Journal(tmp_path / "j")
    monkeypatch.setattr(samples_mod, "write_bytes_atomic", full)
    rid = j.record({"decision": "reject"}, image=np.zeros((8, 8, 3), np.uint8))
    assert j.get(rid)["sample"] is None and j.unsent_samples(10) == []
    assert j.counts()["dropped_samples"] == 1 and j.counts()["reject"] == 1
    j.close()


def test_caps_hold_while_the_host_is_away_and_the_loss_is_counted(tmp_path, tiny_bundle):
    (tmp_path / "token").write_text("t")
    agent, _ = _agent(
        tmp_path,
        tiny_bundle,
        tmp_path / "journal",
        journal={"max_rows": 15, "max_bytes": 60_000, "prune_every_s": 0.2},
        host={"url": "http://127.0.0.1:9", "token_file": str(tmp_path / "token"),
              "interval_s": 0.1, "timeout_s": 0.5},
    )
    [sync] = attach(agent)  # a real sync worker, against a host that is not there
    try:
        summary = agent.run(max_items=60)
        counts = agent.journal.counts()
        assert summary["items"] == 60 and counts["total"] == 60 and counts["unsent"] <= 15
        assert counts["rows"] <= 15 and agent.journal.disk_bytes() <= 60_000
        assert counts["dropped_decisions"] == 60 - counts["rows"]
        assert counts["dropped_samples"] >= counts["dropped_decisions"]
        assert sync.sent == 0 and sync.failures >= 1
        beat = agent.snapshot()  # what heartbeats carry
        assert beat["counts"]["dropped_decisions"] == counts["dropped_decisions"]
    finally:
        agent.close()


def test_a_poison_record_is_quarantined_and_sync_goes_on(tmp_path):
    from edgectl.collector.server import LocalCollector

    c = LocalCollector(tmp_path / "host").start()
    try:
        token = c.add_device("dev1")
        j = Journal(tmp_path / "j")
        good = [j.record({"decision": "ok", "item": i}) for i in range(7)]
        poison = j.record({"id": "not a safe id/..", "decision": "reject", "item": 99})
        good += [j.record({"decision": "ok", "item": i}) for i in range(7, 12)]
        w = SyncWorker(j, HostClient(c.url, "dev1", token), batch_size=50)
        assert w.flush(timeout_s=20)
        host = {r["id"] for r in c.store.decisions("dev1", limit=1000)}
        assert host == set(good)
        assert w.quarantined == 1 and j.counts()["quarantined"] == 1
        assert j.counts()["unsent"] == 0
        [q] = j.quarantined()
        assert q["id"] == poison and "422" in q["quarantined"]
        # New records keep flowing after it.
        later = j.record({"decision": "ok", "item": 13})
        assert w.flush(timeout_s=20)
        assert later in {r["id"] for r in c.store.decisions("dev1", limit=1000)}
        j.close()
    finally:
        c.close()
