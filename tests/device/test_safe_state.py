"""Safe state by construction: the reject output is claimed and driven safe before the model
loads, `edge-agent safe-state` (the unit's ExecStopPost=) drives it safe after a kill or a
crash, and rejects a dead agent left in flight are reconciled on restart. Write-ahead: a
pulse fires only for a decision already committed."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest
import yaml
from devicekit import agent_cmd, frame, write_config
from gpiozero.pins.mock import MockFactory
from test_actuator import ListCamera

from edge_agent import classifier as classifier_mod
from edge_agent.config import load_config
from edge_agent.journal import Journal
from edge_agent.pins import PIN_STATE_ENV, read_pin_level, read_pin_log
from edge_agent.service import Agent
from edge_common.errors import BundleError


def _left_high(factory: MockFactory, pin: int = 17):
    """The line as a dead agent left it: an output held high."""
    p = factory.pin(pin)
    p.function = "output"
    p.state = True
    return p


@pytest.mark.parametrize(("safe_state", "level"), [("off", False), ("on", True)])
def test_output_is_driven_safe_before_the_model_loads(
    tmp_path, tiny_bundle, monkeypatch, safe_state, level
):
    cfg = load_config(
        write_config(
            tmp_path / "agent.yaml",
            tmp_path / "no-such-bundle",
            actuator={"safe_state": safe_state},
        ),
        env={},
    )
    factory = MockFactory()
    pin = _left_high(factory)
    pin.state = not level
    seen = []
    real_load = classifier_mod.Classifier.load

    def spy_load(*a, **kw):
        seen.append(pin.state)  # the output's level when the model starts loading
        return real_load(*a, **kw)

    monkeypatch.setattr(classifier_mod.Classifier, "load", spy_load)
    agent = Agent(cfg, pin_factory=factory)
    try:
        assert pin.state is level and pin.function == "output"
        with pytest.raises(BundleError):
            agent.open()  # the bundle is missing: the output stays safe
        assert seen == [level] and pin.state is level
    finally:
        agent.actuator.stop()
        agent.close()


def test_safe_on_holds_the_output_until_the_line_runs(tmp_path, tiny_bundle):
    cfg = load_config(
        write_config(tmp_path / "agent.yaml", tiny_bundle, actuator={"safe_state": "on"}),
        env={},
    )
    factory = MockFactory()
    agent = Agent(cfg, pin_factory=factory, camera=ListCamera([frame("green")]))
    pin = factory.pin(17)
    try:
        assert pin.state is True  # held while the agent starts
        agent.run(max_items=3)
        states = [s.state for s in pin.states]
        assert False in states  # idle (off) while inspecting green items
        assert pin.state is True  # held again once stopped
    finally:
        agent.close()


def _file_pin_config(tmp_path, bundle, **actuator):
    return write_config(
        tmp_path / "agent.yaml",
        bundle,
        trigger={"type": "interval", "rate_hz": 20, "pin_factory": "mock"},
        actuator={"delay_ms": 20, "pulse_ms": 3000, "pin_factory": "file", **actuator},
        camera={"type": "synthetic", "size": 32, "seed": 3},
    )


@pytest.mark.parametrize("guard", [False, True], ids=["in-process", "guard"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGABRT, signal.SIGSEGV])
def test_killed_agent_output_goes_safe_with_safe_state_and_in_flight_is_reconciled(
    tmp_path, tiny_bundle, sig, guard
):
    pins = tmp_path / "pins"
    env = {**os.environ, PIN_STATE_ENV: str(pins), "PYTHONUNBUFFERED": "1"}
    cfg = _file_pin_config(tmp_path, tiny_bundle, guard=guard)
    agent = subprocess.Popen(
        [*agent_cmd(), "run", "--config", str(cfg)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while read_pin_level(pins, "GPIO17") is not True:
            assert agent.poll() is None, agent.stderr.read()
            assert time.monotonic() < deadline, "no reject pulse started"
            time.sleep(0.02)
        t_kill = time.monotonic_ns()
        agent.send_signal(sig)
        assert agent.wait(timeout=20) == -sig
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        agent.stderr.close()
    if guard:
        # The guard saw the agent's pipe close and drove the output safe itself, long
        # before the 3 s pulse would have ended (no ExecStopPost needed for that).
        deadline = time.monotonic() + 5
        while read_pin_level(pins, "GPIO17") is not False and time.monotonic() < deadline:
            time.sleep(0.01)
        t_safe, level = read_pin_log(pins, "GPIO17")[-1]
        assert level is False and (t_safe - t_kill) / 1e9 < 1.0
    else:
        # Nothing of ours ran: the released line keeps its level, as on many real boards.
        assert read_pin_level(pins, "GPIO17") is True
    j = Journal(tmp_path / "journal")
    pending = j.counts()["pending"]
    j.close()
    assert pending >= 1  # the reject whose pulse was on, at least

    # ExecStopPost: reads the config only (a broken bundle path does not matter).
    data = yaml.safe_load(cfg.read_text())
    data["bundle"]["path"] = str(tmp_path / "gone")
    (tmp_path / "post.yaml").write_text(yaml.safe_dump(data))
    out = subprocess.run(
        [*agent_cmd(), "safe-state", "--config", str(tmp_path / "post.yaml")],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert read_pin_level(pins, "GPIO17") is False
    assert read_pin_log(pins, "GPIO17")[-1][1] is False

    # Restart: the in-flight rejects are reconciled (still counted rejects, reason kept).
    again = subprocess.run(
        [*agent_cmd(), "run", "--config", str(cfg), "--max-items", "1"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert again.returncode == 0, again.stderr
    j = Journal(tmp_path / "journal")
    try:
        counts = j.counts()
        assert counts["reconciled"] >= pending and counts["pending"] == 0
        recs = [j.get(i) for i in j.ids()]
        reconciled = [r for r in recs if r.get("reconciled")]
        assert len(reconciled) >= pending
        assert all(r["decision"] == "reject" for r in reconciled)
        assert "kill or crash" in reconciled[0]["reconciled"]
    finally:
        j.close()


def test_safe_state_without_an_output_is_a_no_op(tmp_path, tiny_bundle):
    cfg = write_config(tmp_path / "agent.yaml", tiny_bundle, actuator={"type": "none"})
    out = subprocess.run(
        [*agent_cmd(), "safe-state", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0 and "no reject output" in out.stdout


def test_safe_state_refuses_a_bad_config_with_one_line(tmp_path, tiny_bundle):
    cfg = write_config(tmp_path / "agent.yaml", tiny_bundle, actuator={"pulse_ms": ".nan"})
    cfg.write_text(cfg.read_text().replace("'.nan'", ".nan"))
    out = subprocess.run(
        [*agent_cmd(), "safe-state", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "edge-agent: error: config: actuator.pulse_ms: must be a finite number, got nan"
    ]


# -- write-ahead ---------------------------------------------------------------------


def _slow_commit_agent(tmp_path, bundle, commit_s: float, delay_ms: float):
    cfg = load_config(
        write_config(
            tmp_path / "agent.yaml",
            bundle,
            trigger={"type": "interval", "rate_hz": 10, "pin_factory": "mock"},
            actuator={"delay_ms": delay_ms, "pulse_ms": 10},
        ),
        env={},
    )
    fired: list[tuple[int, int]] = []
    committed: dict[int, int] = {}  # t_trigger_ns -> monotonic ns when the commit returned
    factory = MockFactory()
    agent = Agent(cfg, pin_factory=factory, camera=ListCamera([frame("red")]))
    agent.actuator.on_fire = lambda trig, t_on: fired.append((trig, t_on))
    real = agent.journal.record_many

    def slow_record_many(items, actuation=None):
        time.sleep(commit_s)
        ids = real(items, actuation)
        now = time.monotonic_ns()
        for rec, _ in items:
            committed[rec["t_trigger_ns"]] = now
        return ids

    agent.journal.record_many = slow_record_many
    return agent, fired, committed


def test_a_pulse_fires_only_after_its_decision_is_committed(tmp_path, tiny_bundle):
    # the pulse 600 ms after its trigger: a 50 ms commit and the tiny model's decision
    # stay in time with a wide margin on a loaded machine (the order is what is tested)
    agent, fired, committed = _slow_commit_agent(tmp_path, tiny_bundle, 0.05, 600)
    try:
        t = threading.Thread(target=lambda: agent.run(duration=2.5))
        t.start()
        t.join(timeout=20)
        assert len(fired) >= 3
        for trig, t_on in fired:
            assert trig in committed and committed[trig] <= t_on
        counts = agent.journal.counts()
        assert counts["pending"] == 0
        assert counts["reject"] == counts["total"] >= len(fired)
    finally:
        agent.close()


def test_a_commit_later_than_the_pulse_means_no_pulse_and_a_counted_miss(tmp_path, tiny_bundle):
    agent, fired, committed = _slow_commit_agent(tmp_path, tiny_bundle, 0.3, 100)
    try:
        summary = agent.run(max_items=2)
        time.sleep(0.2)
        assert fired == []  # never actuated without a journal entry
        assert summary["deadline_misses"] == 2
        recs = [agent.journal.get(i) for i in agent.journal.ids()]
        assert len(recs) == 2 and all(r["deadline_missed"] for r in recs)
        assert agent.journal.counts()["deadline_misses"] == 2
    finally:
        agent.close()
