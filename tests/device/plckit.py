"""PLC test helpers: a busy port, an agent running in a thread, a real mosquitto broker."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

from devicekit import frame
from netkit import free_port
from syskit import program

from edge_agent.camera import Frame


@contextlib.contextmanager
def busy_port():
    """A 127.0.0.1 port someone else is listening on, for as long as the block runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


class PartCamera:
    """Part n (1-based, in trigger order) is red (a reject) when ``n % every == 0``, else
    green; ``delay_s`` makes the capture slow (deadline tests)."""

    name = "parts"

    def __init__(self, every: int = 3, delay_s: float = 0.0) -> None:
        self.every, self.delay_s, self.reads = every, delay_s, 0
        self.green, self.red = frame("green"), frame("red")

    def open(self) -> None:
        pass

    def read(self) -> Frame:
        self.reads += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        img = self.red if self.reads % self.every == 0 else self.green
        return Frame(img, time.monotonic_ns(), None)

    def close(self) -> None:
        pass


class AgentThread:
    """``agent.run()`` in a thread until ``stop()``."""

    def __init__(self, agent, **kw) -> None:
        self.agent = agent
        self.summary: dict = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, kwargs=kw, daemon=True)

    def _run(self, **kw) -> None:
        try:
            self.summary = self.agent.run(**kw)
        except BaseException as err:  # noqa: BLE001 - re-raised in stop()
            self.error = err

    def start(self, ready_timeout: float = 20) -> AgentThread:
        self.thread.start()
        end = time.monotonic() + ready_timeout
        while self.agent.state != "running":
            if self.error is not None or time.monotonic() > end:
                raise RuntimeError(f"agent did not start: {self.error}")
            time.sleep(0.01)
        return self

    def stop(self) -> dict:
        self.agent.stop()
        self.thread.join(timeout=30)
        if self.error is not None:
            raise self.error
        return self.summary


class Mosquitto:
    """A real mosquitto on 127.0.0.1:``port`` with its own config and persistence folder
    (so queued messages for a persistent subscriber survive a restart)."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {folder}/\n"
            f"log_dest file {folder}/mosquitto.log\n"
            "max_queued_messages 100000\n"
            # As root mosquitto drops to the 'mosquitto' user, who cannot enter pytest's
            # private tmp folders (no log, no persistence): stay the test's user.
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen([program("mosquitto"), "-c", str(self.conf)])
        end = time.monotonic() + 10
        while time.monotonic() < end:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        log = (self.folder / "mosquitto.log")
        raise RuntimeError(
            f"mosquitto did not start: {log.read_text() if log.exists() else 'no log'}"
        )

    def stop(self) -> None:
        """SIGTERM: mosquitto writes its persistence file and exits (a clean restart)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None



class ModbusPlc:
    """A PLC on the agent's Modbus server (docs/plc.md's map): it triggers parts with its
    own numbers and, on its own thread, reads the shown result every ``poll_s`` and acks
    it ``ack_delay()`` seconds after it first saw it. A result counts as received when
    its ack write succeeded (the agent answers an ack once the part's record is durable),
    so ``received`` is what this PLC acted on: ``(seq, passed, fault)`` in ack order."""

    VALID, PASS = 1 << 2, 1 << 3

    def __init__(self, port: int, ack_delay=lambda: 0.0, poll_s: float = 0.002) -> None:
        from pymodbus.client import ModbusTcpClient

        self.client = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        self.ack_delay, self.poll_s = ack_delay, poll_s
        self.received: list[tuple[int, bool, int]] = []
        self.failed_acks: list[tuple[int, str]] = []  # (seq, why) of ack writes that failed
        self.errors = 0
        self.last_error = ""
        self._lock = threading.Lock()  # pymodbus's sync client is one request at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def connect(self, timeout: float = 20) -> ModbusPlc:
        end = time.monotonic() + timeout
        while not self.client.connect():
            if time.monotonic() > end:
                raise RuntimeError("the agent's Modbus server never answered")
            time.sleep(0.05)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def trigger(self, seq: int) -> bool:
        """PartSeq + Command=trigger in one FC16; False when the write failed."""
        return self._call(lambda: self.client.write_registers(0, [seq, 1]))

    def _call(self, fn) -> bool:
        with self._lock:
            try:
                rr = fn()
            except Exception as err:  # noqa: BLE001 - the agent died or restarts: go on
                self.errors += 1
                self.last_error = f"{type(err).__name__}: {err}"[:200]
                self.client.close()
                return False
        if rr.isError():
            self.last_error = str(rr)[:200]
        return not rr.isError()

    def _read(self):
        with self._lock:
            try:
                rr = self.client.read_input_registers(0, count=11)
            except Exception:  # noqa: BLE001
                self.errors += 1
                self.client.close()
                return None
        return None if rr.isError() else rr.registers

    def _run(self) -> None:
        shown: int | None = None  # the number of the result seen (reset after its ack)
        due = 0.0
        while not self._stop.is_set():
            ir = self._read()
            if ir is None:
                shown = None
                if not self.client.connected:
                    with self._lock:
                        self.client.connect()
                time.sleep(self.poll_s)
                continue
            if ir[1] & self.VALID:
                if ir[2] != shown:
                    shown, due = ir[2], time.monotonic() + self.ack_delay()
                if time.monotonic() >= due:
                    seq, passed, fault = ir[2], bool(ir[1] & self.PASS), ir[5]
                    if self._call(lambda s=seq: self.client.write_registers(1, [2, s])):
                        self.received.append((seq, passed, fault))
                    else:
                        self.failed_acks.append((seq, self.last_error))
                    shown = None
            time.sleep(self.poll_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.client.close()
