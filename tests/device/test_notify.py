"""sd_notify over a real unix datagram socket: READY=1 then WATCHDOG=1 from the loop."""

from __future__ import annotations

import socket
import threading

from edge_agent.config import load_config
from edge_agent.notify import Notifier
from edge_agent.service import Agent


def _drain(sock: socket.socket, until_stopping: bool = False) -> list[str]:
    msgs = []
    sock.settimeout(5.0 if until_stopping else 0.2)
    try:
        while True:
            msgs.append(sock.recv(4096).decode())
            if until_stopping and "STOPPING=1" in msgs[-1]:
                break
    except (TimeoutError, BlockingIOError):
        pass
    return msgs


def test_agent_sends_ready_then_watchdog(tmp_path, sim_config):
    addr = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(addr)
    msgs: list[str] = []
    reader = threading.Thread(target=lambda: msgs.extend(_drain(sock, until_stopping=True)))
    reader.start()
    try:
        cfg = load_config(sim_config, env={})
        cfg.trigger.rate_hz = 50
        notifier = Notifier(env={"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "100000"})
        agent = Agent(cfg, notifier=notifier)
        try:
            agent.run(max_items=20)  # ~0.4 s at 50 Hz: several watchdog periods of 50 ms
        finally:
            agent.close()
        reader.join(timeout=10)
    finally:
        sock.close()
    lines = [line for m in msgs for line in m.splitlines()]
    assert "READY=1" in lines
    ready_at = lines.index("READY=1")
    assert "WATCHDOG=1" in lines[ready_at:], lines
    assert any(line.startswith("STATUS=") for line in lines)
    assert "STOPPING=1" in lines


def test_abstract_namespace_socket():
    name = f"edge-agent-test-{id(object())}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        n = Notifier(env={"NOTIFY_SOCKET": "@" + name})
        assert n.ready("hello")
        assert _drain(sock) == ["READY=1\nSTATUS=hello"]
    finally:
        sock.close()


def test_without_notify_socket_everything_is_a_noop():
    n = Notifier(env={})
    assert not n.enabled and not n.ready() and not n.watchdog(force=True)
