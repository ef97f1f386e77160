"""Network helpers for tests: the one ``free_port``."""

from __future__ import annotations

import socket


def free_port(addr: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``addr`` right now (the kernel's pick; a server
    started next takes it, with the small race every such helper has)."""
    with socket.socket() as s:
        s.bind((addr, 0))
        return int(s.getsockname()[1])
