"""How close to its times the reject actuator pulses: the figures the tests do not assert.

The tests (tests/device/test_actuator.py) check what holds on any machine: one pulse,
never before its delay, never off before delay + width. How late it lands depends on the
machine and its load, so it is measured here: ``edge_agent.actuator.Actuator`` on
gpiozero's MockFactory, ``--pulses`` pulses one after another, each scheduled from "now"
with ``--delay-ms`` and ``--pulse-ms``; the pin's own state history gives when it went on
and off.

    .venv/bin/python benchmarks/bench_actuator.py [--pulses 200] [--json]

Prints p50/p95/p99/max of the on-lateness (on − trigger − delay) and of the width error
(measured width − pulse), in ms, with the CPU model. Run it beside a load (e.g.
``stress-ng --cpu 2``) to see what a loaded board does.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from gpiozero.pins.mock import MockFactory

from edge_agent.actuator import Actuator
from edge_agent.machine import cpu_model
from edge_common.timing import percentiles


def measure(pulses: int, delay_ms: float, pulse_ms: float) -> dict[str, list[float]]:
    factory = MockFactory()
    act = Actuator(17, delay_ms=delay_ms, pulse_ms=pulse_ms, pin_factory=factory)
    pin = factory.pin(17)
    late, width_err = [], []
    try:
        for _ in range(pulses):
            pin.clear_states()
            act.schedule(time.monotonic_ns())
            end = time.monotonic() + 10
            while len(pin.states) < 3 and time.monotonic() < end:
                time.sleep(0.001)
            states = list(pin.states)
            if len(states) < 3:
                raise SystemExit("a pulse did not end within 10 s")
            # states[1]: on, counted from the clear just before the trigger; [2]: the width
            late.append(states[1].timestamp * 1e3 - delay_ms)
            width_err.append(states[2].timestamp * 1e3 - pulse_ms)
    finally:
        act.stop()
    return {"on_late_ms": late, "width_error_ms": width_err}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pulses", type=int, default=200)
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--pulse-ms", type=float, default=10.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    got = measure(args.pulses, args.delay_ms, args.pulse_ms)
    rows = {k: percentiles(v) for k, v in got.items()}
    cpu = f"{cpu_model()} ({os.cpu_count()} cores)"
    if args.json:
        print(json.dumps({"cpu": cpu, "pulses": args.pulses, "delay_ms": args.delay_ms,
                          "pulse_ms": args.pulse_ms, "rows": rows}))
        return
    print(f"actuator timing on {cpu}: {args.pulses} pulses, delay {args.delay_ms:g} ms, "
          f"width {args.pulse_ms:g} ms")
    for name, r in rows.items():
        print(f"  {name:<15} p50 {r['p50']:7.3f}  p95 {r['p95']:7.3f}  p99 {r['p99']:7.3f}  "
              f"max {r['max']:7.3f}")


if __name__ == "__main__":
    main()
