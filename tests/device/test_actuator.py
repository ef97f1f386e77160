"""The reject actuator on gpiozero's MockFactory: pulse timing from the pin's state history.

A pulse is checked for what holds on any machine, however loaded: the pin goes on and
off once, never before the delay, and not off before delay + width. How close to those
times it lands is a timing figure: benchmarks/bench_actuator.py measures it."""

from __future__ import annotations

import threading
import time

import pytest
from devicekit import frame, write_config
from gpiozero.pins.mock import MockFactory

from edge_agent.actuator import Actuator
from edge_agent.config import from_dict
from edge_agent.service import Agent

EPS_S = 1e-6  # float rounding of the pin's timestamps (time.monotonic deltas)


def wait_states(pin, n: int, timeout_s: float = 20.0) -> list:
    """The pin's state history once it holds ``n`` entries (or at the timeout)."""
    end = time.monotonic() + timeout_s
    while len(pin.states) < n and time.monotonic() < end:
        time.sleep(0.01)
    return list(pin.states)


def assert_pulse_not_early(states, delay_s: float, pulse_s: float) -> None:
    """``states`` (since a clear before the trigger) are one pulse: on no sooner than the
    delay after the trigger, off no sooner than delay + width."""
    assert [s.state for s in states] == [False, True, False]
    on, width = states[1].timestamp, states[2].timestamp
    assert on >= delay_s - EPS_S and on + width >= delay_s + pulse_s - EPS_S


class ListCamera:
    """Returns the given frames in order (the item under the sensor), then repeats the last."""

    name = "list"

    def __init__(self, frames, delay_s: float = 0.0) -> None:
        self.frames = list(frames)
        self.delay_s = delay_s
        self.reads = 0

    def open(self) -> None:
        pass

    def read(self):
        from edge_agent.camera import Frame

        time.sleep(self.delay_s)
        img = self.frames[min(self.reads, len(self.frames) - 1)]
        self.reads += 1
        return Frame(img, time.monotonic_ns(), None)

    def close(self) -> None:
        pass


def test_pulse_at_delay_for_width():
    factory = MockFactory()
    act = Actuator(17, delay_ms=100, pulse_ms=40, pin_factory=factory)
    pin = factory.pin(17)
    try:
        pin.clear_states()
        assert act.schedule(time.monotonic_ns())
        assert_pulse_not_early(wait_states(pin, 3), 0.100, 0.040)
        time.sleep(0.05)
        assert len(pin.states) == 3 and act.pulses == 1 and act.misses == 0
    finally:
        act.stop()


def test_late_schedule_is_a_miss_and_no_pulse():
    factory = MockFactory()
    act = Actuator(17, delay_ms=10, pulse_ms=40, pin_factory=factory)
    pin = factory.pin(17)
    pin.clear_states()
    assert not act.schedule(time.monotonic_ns() - 50_000_000)  # triggered 50 ms ago
    time.sleep(0.1)
    assert act.misses == 1 and act.pulses == 0
    assert [s.state for s in pin.states] == [False]
    act.stop()


def test_overlapping_pulses_merge_and_stop_mid_pulse_leaves_pin_low():
    factory = MockFactory()
    # pulses far longer than the test: stop() lands mid-pulse however late it runs
    act = Actuator(17, delay_ms=20, pulse_ms=10_000, pin_factory=factory)
    pin = factory.pin(17)
    pin.clear_states()
    t = time.monotonic_ns()
    act.schedule(t)
    act.schedule(t + 30_000_000)
    wait_states(pin, 2)
    assert pin.state  # mid-pulse
    act.stop()
    assert not pin.state
    assert [s.state for s in pin.states] == [False, True, False]  # merged, then safe
    time.sleep(0.1)
    assert not pin.state  # nothing pending fires after stop


def _gpio_agent(tmp_path, bundle, frames, delay_ms=150, pulse_ms=40, cam_delay_s=0.0):
    cfg_path = write_config(
        tmp_path / "agent.yaml",
        bundle,
        trigger={"type": "gpio", "pin": 4, "pull": "up", "bounce_ms": None, "pin_factory": "mock"},
        actuator={
            "type": "gpio",
            "pin": 17,
            "delay_ms": delay_ms,
            "pulse_ms": pulse_ms,
            "pin_factory": "mock",
        },
    )
    from edge_agent.config import load_config

    cfg = load_config(cfg_path, env={})
    agent = Agent(cfg, camera=ListCamera(frames, cam_delay_s))
    agent.open()
    return agent, agent.trigger.device.pin, agent.actuator.device.pin


def _run_one_item(agent, in_pin, out_pin, wait_s=0.4):
    result = {}
    t = threading.Thread(target=lambda: result.update(agent.run(max_items=1)))
    t.start()
    time.sleep(0.05)
    out_pin.clear_states()
    in_pin.drive_low()  # beam broken: active low with the pull-up
    time.sleep(0.005)
    in_pin.drive_high()
    t.join(timeout=5)
    time.sleep(max(0.0, wait_s))
    return result


@pytest.mark.parametrize(("colour", "pulses"), [("red", 1), ("green", 0)])
def test_gpio_trigger_defective_item_gets_one_pulse(tmp_path, tiny_bundle, colour, pulses):
    # a delay with a wide margin over the tiny model's decision (milliseconds) on any
    # machine, however loaded: a miss here would be the agent's fault, not the load's
    agent, in_pin, out_pin = _gpio_agent(tmp_path, tiny_bundle, [frame(colour)],
                                         delay_ms=1000)
    try:
        # Run until the item is done (not max_items=1: stopping cancels a pending pulse).
        summary = {}
        t = threading.Thread(target=lambda: summary.update(agent.run(duration=60)))
        t.start()
        end = time.monotonic() + 20
        while agent.state != "running" and time.monotonic() < end:
            time.sleep(0.01)
        out_pin.clear_states()
        in_pin.drive_low()
        time.sleep(0.005)
        in_pin.drive_high()
        while agent.stats.items < 1 and time.monotonic() < end:
            time.sleep(0.01)
        states = wait_states(out_pin, 3) if pulses else list(out_pin.states)
        agent.stop()
        t.join(timeout=20)
        assert summary["items"] == 1
        if pulses:
            assert_pulse_not_early(states, 1.0, 0.040)
            assert summary["rejects"] == 1
        else:
            assert [s.state for s in states] == [False]
            assert summary["rejects"] == 0
        assert summary["deadline_misses"] == 0
        assert agent.journal.counts()["total"] == 1
    finally:
        agent.close()


def test_late_decision_gets_no_pulse_and_counts_a_miss(tmp_path, tiny_bundle):
    agent, in_pin, out_pin = _gpio_agent(
        tmp_path, tiny_bundle, [frame("red")], delay_ms=5, cam_delay_s=0.05
    )
    try:
        summary = _run_one_item(agent, in_pin, out_pin, wait_s=0.1)
        assert summary["items"] == 1 and summary["deadline_misses"] == 1
        assert [s.state for s in out_pin.states] == [False]
        rec = agent.journal.unsent(10)[0]
        assert rec["deadline_missed"] is True and rec["decision"] == "reject"
    finally:
        agent.close()


def test_agent_stop_mid_pulse_leaves_pin_low(tmp_path, tiny_bundle):
    cfg = from_dict(
        {
            "bundle": {"path": str(tiny_bundle)},
            "trigger": {"type": "interval", "rate_hz": 20},
            "actuator": {
                "type": "gpio",
                "pin": 17,
                "delay_ms": 10,
                "pulse_ms": 2000,
                "pin_factory": "mock",
            },
            "journal": {"dir": str(tmp_path / "j"), "synchronous": "normal"},
        },
        env={},
    )
    agent = Agent(cfg, camera=ListCamera([frame("red")]))
    agent.open()
    pin = agent.actuator.device.pin
    t = threading.Thread(target=agent.run)
    t.start()
    deadline = time.monotonic() + 20
    while not pin.state and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pin.state, "the pulse never started"
    agent.stop()
    t.join(timeout=5)
    assert not t.is_alive()
    assert not pin.state and pin.states[-1].state is False
    agent.close()
