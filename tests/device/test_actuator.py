"""The reject actuator on gpiozero's MockFactory: pulse timing from the pin's state history."""

from __future__ import annotations

import threading
import time

import pytest
from devicekit import frame, write_config
from gpiozero.pins.mock import MockFactory

from edge_agent.actuator import Actuator
from edge_agent.config import from_dict
from edge_agent.service import Agent

TOL_S = 0.02  # generous: a loaded 2-core machine


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
        time.sleep(0.3)
        states = [s.state for s in pin.states]
        assert states == [False, True, False]
        assert pin.states[1].timestamp == pytest.approx(0.100, abs=TOL_S)
        assert pin.states[2].timestamp == pytest.approx(0.040, abs=TOL_S)
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
    act = Actuator(17, delay_ms=20, pulse_ms=400, pin_factory=factory)
    pin = factory.pin(17)
    pin.clear_states()
    t = time.monotonic_ns()
    act.schedule(t)
    act.schedule(t + 30_000_000)
    time.sleep(0.15)
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
    agent, in_pin, out_pin = _gpio_agent(tmp_path, tiny_bundle, [frame(colour)])
    try:
        # Run for a fixed time (not max_items=1): stopping would cancel the pending pulse.
        summary = {}
        t = threading.Thread(target=lambda: summary.update(agent.run(duration=0.6)))
        t.start()
        time.sleep(0.1)
        out_pin.clear_states()
        in_pin.drive_low()
        time.sleep(0.005)
        in_pin.drive_high()
        t.join(timeout=5)
        states = out_pin.states
        assert summary["items"] == 1
        if pulses:
            assert [s.state for s in states] == [False, True, False]
            assert states[1].timestamp == pytest.approx(0.150, abs=TOL_S)
            assert states[2].timestamp == pytest.approx(0.040, abs=TOL_S)
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
    deadline = time.monotonic() + 3
    while not pin.state and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pin.state, "the pulse never started"
    agent.stop()
    t.join(timeout=5)
    assert not t.is_alive()
    assert not pin.state and pin.states[-1].state is False
    agent.close()
