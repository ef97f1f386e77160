"""The output guard: a small process that owns the reject output and times every pulse,
so the output's on-time is bounded whatever happens to the agent.

Why a process: the agent's own scheduler thread ends each pulse, so an agent stopped by
SIGSTOP, hung in a native call or starved mid-pulse held the output on until systemd's
watchdog fired (16.7 s measured, issue 37). Smart cameras and PLCs bound an output's
on-time independently of the program that set it (a monostable relay, a PLC timer); on a
board without such hardware the next best thing is a separate process with nothing else
to do. It runs the same ``Actuator`` (heap scheduler, gpiozero device) the agent used to
run in-process; the agent sends it pulse requests over a pipe.

Bounds (docs/operations.md):
- a pulse that started ends ``pulse_ms`` later, timed here: SIGSTOP of the agent, a hang
  in the model or a stuck agent thread cannot stretch it (measured by bench_faults.py);
- with ``safe_state: on`` (a diverter that rejects everything while the agent is away):
  no request and no heartbeat for ``lease_ms`` means the agent is stopped or hung, so the
  output is driven to that safe level (pending pulses dropped, reported ``dropped``); the
  next message re-arms it. With ``safe_state: off`` a silent agent changes nothing here:
  the pulses it already committed are real rejects and fire on time (dropping them would
  ship the parts they were for), and no new ones come;
- the agent's end of the pipe closes (exit, SIGKILL, crash): the output is driven safe
  at once and the guard exits; the unit's ``ExecStopPost=edge-agent safe-state`` drives it
  again once every process of the unit is gone;
- the guard itself dies: the agent sees its pipe close, raises the ``actuator`` fault and
  stops (``Actuator.failed`` → ``on_fault``); ``ExecStopPost`` drives the output safe.

gpiozero / lgpio allow one owner per GPIO line: the guard claims the reject output and
the agent never opens it (the trigger input stays in the agent). SIGINT and SIGTERM are
ignored here: the guard ends when the agent closes the pipe, so a stop signal sent to the
whole unit cannot end a pulse's timing before the agent has stopped.

Protocol, one line each. Agent → guard: ``S <t_trigger_ns> <tag>`` schedule a pulse,
``A`` arm, ``F`` safe now (a fault), ``H`` heartbeat. Guard → agent: ``R`` ready,
``E <t_trigger_ns> <t_on_ns>`` a pulse went active, ``D <tag> <done|late|dropped|missed>``,
``L`` the lease lapsed (output safe), ``X <reason>`` the guard failed.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge_agent.actuator import LATE_MS, Actuator
from edge_common.errors import HardwareError

if TYPE_CHECKING:
    from edge_agent.config import ActuatorConfig
    from edge_agent.pins import PinFactories

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


# -- the guard process -------------------------------------------------------------------


def serve(spec: dict[str, Any], inp: Any = None, out: Any = None) -> int:
    """Run the guard until the agent's end of the pipe closes (``python -m
    edge_agent.guard SPEC``)."""
    from edge_agent.pins import make_pin_factory

    inp = inp or sys.stdin
    out = out or sys.stdout
    outbox: queue.Queue[str | None] = queue.Queue()

    def sender() -> None:  # the only writer: the actuator's thread never blocks on the pipe
        while (line := outbox.get()) is not None:
            try:
                out.write(line + "\n")
                out.flush()
            except (OSError, ValueError):
                return

    send_thread = threading.Thread(target=sender, name="guard-send", daemon=True)
    send_thread.start()
    try:
        act = Actuator(spec["pin"], spec["delay_ms"], spec["pulse_ms"], spec["active_high"],
                       make_pin_factory(spec["pin_factory"]), safe_on=spec["safe_on"],
                       late_ms=spec.get("late_ms", LATE_MS))
    except Exception as err:  # noqa: BLE001 - told to the agent in one line
        outbox.put(f"X {err}".replace("\n", " "))
        outbox.put(None)
        send_thread.join(timeout=2)
        return 1
    act.on_fire = lambda trig, t_on: outbox.put(f"E {trig} {t_on}")

    def report(outcomes: list[tuple[Any, str]]) -> None:
        for tag, outcome in outcomes:
            outbox.put(f"D {tag} {outcome}")

    act.on_done = report
    act.on_fault = lambda reason: outbox.put("X " + reason.replace("\n", " "))
    lease_ns = int(spec.get("lease_ms", 1000) * 1e6)
    last = [time.monotonic_ns()]
    lapsed = [False]
    done = threading.Event()

    def watch() -> None:
        while spec["safe_on"] and not done.wait(lease_ns / 4e9):
            if not lapsed[0] and time.monotonic_ns() - last[0] > lease_ns:
                lapsed[0] = True
                act.safe()
                outbox.put("L")

    threading.Thread(target=watch, name="guard-lease", daemon=True).start()
    outbox.put("R")
    try:
        for line in inp:
            last[0] = time.monotonic_ns()
            lapsed[0] = False
            kind, _, rest = line.strip().partition(" ")
            if kind == "S":
                trig, _, tag = rest.partition(" ")
                if not act.schedule(int(trig), tag=tag or None) and tag:
                    outbox.put(f"D {tag} missed")
            elif kind == "A":
                act.arm()
            elif kind == "F":
                act.safe()
    finally:
        done.set()
        act.stop()  # safe level, pending pulses reported dropped
        outbox.put(None)
        send_thread.join(timeout=2)  # every outcome reaches the agent before we exit
    return 0


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(levelname)s edge_agent.guard: %(message)s")
    return serve(json.loads(sys.argv[1]))


# -- the agent's side --------------------------------------------------------------------


class GuardedActuator:
    """The ``Actuator`` interface, executed by a guard process (see the module docstring).

    ``schedule`` decides deadline misses here (same rule as ``Actuator``) and sends the
    pulse; outcomes come back from the guard (``on_done``, ``on_fire``). If the guard
    exits or fails, ``failed`` is set and ``on_fault`` called: no pulse can fire any more.
    """

    def __init__(self, pin: int | str, delay_ms: float, pulse_ms: float,
                 active_high: bool = True, pin_factory: str | None = None,
                 safe_on: bool = False, late_ms: float = LATE_MS, lease_ms: float = 1000.0,
                 on_fire: Callable[[int, int], None] | None = None,
                 on_done: Callable[[list[tuple[Any, str]]], None] | None = None) -> None:
        self.delay_ns = int(delay_ms * 1e6)
        self.pulse_ns = int(pulse_ms * 1e6)
        self.safe_on = bool(safe_on)
        self.lease_s = lease_ms / 1000.0
        self.on_fire = on_fire
        self.on_done = on_done
        self.on_fault: Callable[[str], None] | None = None
        self.failed: str | None = None
        self.pulses = self.scheduled = self.late = self.dropped = self.misses = 0
        self.lapses = 0
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = False
        spec = {"pin": pin, "delay_ms": delay_ms, "pulse_ms": pulse_ms,
                "active_high": active_high, "pin_factory": pin_factory, "safe_on": safe_on,
                "late_ms": late_ms, "lease_ms": lease_ms}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.guard", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT_S)
        first = self.proc.stdout.readline().strip() if ready else ""
        if first != "R":
            self.proc.kill()
            self.proc.wait()
            why = first[2:] if first.startswith("X ") else first or "no answer"
            raise HardwareError(f"actuator: output guard did not start: {why}")
        self._reader = threading.Thread(target=self._read, name="guard-read", daemon=True)
        self._reader.start()
        self._beat = threading.Thread(target=self._heartbeat, name="guard-beat", daemon=True)
        self._beat.start()

    # -- to the guard

    def _send(self, line: str) -> bool:
        if self.failed is not None or self._stopping:
            return False
        try:
            with self._lock:
                assert self.proc.stdin is not None
                self.proc.stdin.write(line + "\n")
                self.proc.stdin.flush()
            return True
        except (OSError, ValueError) as err:
            self._fail(f"output guard unreachable: {err}")
            return False

    def _heartbeat(self) -> None:
        while not self._stopping and self.failed is None:
            time.sleep(self.lease_s / 4)
            self._send("H")

    def arm(self) -> None:
        self._send("A")

    def deadline_ok(self, t_trigger_ns: int, now_ns: int | None = None) -> bool:
        now = time.monotonic_ns() if now_ns is None else now_ns
        return now <= t_trigger_ns + self.delay_ns

    def schedule(self, t_trigger_ns: int, now_ns: int | None = None, tag: Any = None) -> bool:
        if self._stopping or self.failed is not None or not self.deadline_ok(t_trigger_ns,
                                                                                now_ns):
            with self._lock:
                self.misses += 1
            return False
        tag_s = "" if tag is None else str(tag).replace(" ", "_")
        if not self._send(f"S {t_trigger_ns} {tag_s}".rstrip()):
            with self._lock:
                self.misses += 1
            return False
        with self._lock:
            self.scheduled += 1
            if tag_s:
                self._in_flight.add(tag_s)
        return True

    def safe(self) -> None:
        self._send("F")

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def stop(self) -> None:
        """Close the pipe: the guard drives the output safe, reports what it dropped and
        exits; wait for that (bounded)."""
        self._stopping = True
        try:
            with self._lock:
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)

    # -- from the guard

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            kind, _, rest = line.strip().partition(" ")
            if kind == "E":
                trig, _, t_on = rest.partition(" ")
                with self._lock:
                    self.pulses += 1
                if self.on_fire is not None:
                    self.on_fire(int(trig), int(t_on))
            elif kind == "D":
                tag, _, outcome = rest.partition(" ")
                with self._lock:
                    self._in_flight.discard(tag)
                    self.late += outcome == "late"
                    self.dropped += outcome == "dropped"
                    self.misses += outcome == "missed"
                if self.on_done is not None:
                    try:
                        self.on_done([(tag, outcome)])
                    except Exception:  # noqa: BLE001
                        log.exception("actuator: on_done callback failed")
            elif kind == "L":
                self.lapses += 1
                log.warning("output guard: no word from the agent for %.0f ms; output "
                            "driven safe, pending pulses dropped", self.lease_s * 1000)
            elif kind == "X":
                self._fail(f"output guard failed: {rest}")
        if not self._stopping:
            self._fail(f"output guard exited (code {self.proc.wait()})")

    def _fail(self, reason: str) -> None:
        if self.failed is not None:
            return
        self.failed = reason
        log.critical("actuator: %s", reason)
        if self.on_fault is not None:
            try:
                self.on_fault(reason)
            except Exception:  # noqa: BLE001
                log.exception("actuator: on_fault callback failed")


def open_output(ac: ActuatorConfig, pins: PinFactories) -> Actuator | GuardedActuator:
    """The agent's reject output as configured: through the guard process when it drives a
    pin, in-process for the ``mock`` factory, an injected factory or ``guard: false``."""
    pin = ac.pin if ac.type == "gpio" else None
    if pin is not None and ac.guard and pins.override is None and ac.pin_factory != "mock":
        return GuardedActuator(pin, ac.delay_ms, ac.pulse_ms, ac.active_high,
                               ac.pin_factory, safe_on=ac.safe_state == "on",
                               lease_ms=ac.lease_ms)
    factory = pins.get(ac.pin_factory) if pin is not None else None
    return Actuator(
        pin, ac.delay_ms, ac.pulse_ms, ac.active_high, factory, safe_on=ac.safe_state == "on"
    )


if __name__ == "__main__":
    sys.exit(main())
