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

