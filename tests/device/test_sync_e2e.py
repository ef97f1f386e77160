"""End to end on 127.0.0.1: the real `edge-agent run` (synthetic camera, mock pins) and a
real collector. Decisions journaled while the host is down arrive once it is up; a
SIGKILLed agent, restarted, neither loses nor duplicates anything."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from devicekit import agent_cmd, write_config

from edge_agent.journal import Journal
from edgectl.collector.server import LocalCollector

DEVICE = "test-device"


@pytest.fixture
def setup(tmp_path, tiny_bundle):
    c = LocalCollector(tmp_path / "host")          # address reserved, not started: "down"
    (tmp_path / "token").write_text(c.add_device(DEVICE))
    cfg = write_config(
        tmp_path / "agent.yaml", tiny_bundle,
        trigger={"type": "interval", "rate_hz": 100, "pin_factory": "mock"},
        samples={"rate": 0.1},
        host={"url": c.url, "token_file": str(tmp_path / "token"), "batch_size": 10,
              "interval_s": 0.1, "heartbeat_s": 0.5, "backoff_max_s": 0.3, "timeout_s": 5},
    )
    yield c, cfg, tmp_path / "journal"
    c.close()


def run_agent(cfg, n: int) -> subprocess.CompletedProcess:
    return subprocess.run([*agent_cmd(), "run", "--config", str(cfg), "--max-items", str(n)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def journal_ids(jdir) -> list[str]:
    j = Journal(jdir)
    try:
        return j.ids()
    finally:
        j.close()


def host_ids(c) -> list[str]:
    return [r["id"] for r in c.store.decisions(DEVICE, limit=100000)]


def test_journaled_while_host_down_then_delivered_once_even_after_sigkill(setup):
    c, cfg, jdir = setup
    n = 60
    first = run_agent(cfg, n)
    assert first.returncode == 0, first.stderr
    down = journal_ids(jdir)
    assert len(down) == n and c.store.decision_count() == 0      # all kept, none sent

    c.start()
    second = run_agent(cfg, 10)                                    # the backlog goes first
    assert second.returncode == 0, second.stderr
    assert set(down) <= set(host_ids(c))
    assert sorted(host_ids(c)) == sorted(journal_ids(jdir))       # n + 10, each once

    # SIGKILL while batches are in flight, then restart. A collector fast enough can have
    # every journaled row before the kill lands; then the crash left nothing to redeliver
    # and the case is not tested yet: kill again (each run journals more), up to 5 times.
    crashed_with_backlog = 0
    for _attempt in range(5):
        proc = subprocess.Popen(
            [*agent_cmd(), "run", "--config", str(cfg), "--max-items", "2000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            start = c.store.decision_count()
            deadline = time.monotonic() + 60
            while c.store.decision_count() < start + 50 and time.monotonic() < deadline:
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        killed = journal_ids(jdir)
        if c.store.decision_count() < len(killed):                # some still unsent
            crashed_with_backlog += 1
            break
    assert crashed_with_backlog, "no kill landed with rows unsent in 5 tries"
    third = run_agent(cfg, 10)
    assert third.returncode == 0, third.stderr
    final = journal_ids(jdir)
    assert len(final) == len(killed) + 10
    assert sorted(host_ids(c)) == sorted(final)                   # nothing lost or doubled
    assert c.store.decision_count(DEVICE) == len(final)
    hb = c.store.device(DEVICE)["heartbeat"]
    assert hb["device_id"] == DEVICE and hb["model_version"] == "test-1"
    j = Journal(jdir)
    try:
        samples = j.counts()
        assert samples["unsent"] == 0
        assert j.unsent_samples(10) == []
    finally:
        j.close()
    assert c.store.sample_count(DEVICE) > 0
