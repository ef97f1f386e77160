"""Run the collector on uvicorn: in the foreground (``edgectl serve``) or in a thread
(tests, benchmarks, the demo) on a socket the caller already bound."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import uvicorn

from edgectl.collector.app import create_app
from edgectl.collector.settings import Settings
from edgectl.collector.store import Store


def make_server(store: Store, settings: Settings, host: str = "127.0.0.1", port: int = 0,
                tls_cert: str | Path | None = None, tls_key: str | Path | None = None,
                log_level: str = "warning", access_log: bool = False) -> uvicorn.Server:
    """A uvicorn server for the collector app; HTTPS when a certificate and key are given."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    config = uvicorn.Config(
        create_app(store, settings), host=host, port=port, log_level=log_level,
        access_log=access_log, lifespan="off", server_header=False,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


def reserve_port(host: str = "127.0.0.1") -> socket.socket:
    """A socket bound to a free port but not listening yet: connections are refused until
    a server starts on it (a collector that is "down" with a known address)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


class ServerThread:
    """The collector on a thread, serving on ``sock`` (see ``reserve_port``)."""

    def __init__(self, store: Store, settings: Settings, sock: socket.socket,
                 tls_cert: str | Path | None = None, tls_key: str | Path | None = None) -> None:
        self.sock = sock
        host, port = sock.getsockname()[:2]
        self.scheme = "https" if tls_cert else "http"
        self.url = f"{self.scheme}://{host}:{port}"
        self.server = make_server(store, settings, host, port, tls_cert, tls_key)
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 20.0) -> ServerThread:
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        name="collector", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("collector did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None


class LocalCollector:
    """A whole collector in this process: data dir, store, server thread (the demo, tests,
    benchmarks). ``sock`` (from ``reserve_port``) fixes the address before it starts."""

    def __init__(self, data_dir: str | Path, sock: socket.socket | None = None,
                 tls_cert: str | Path | None = None, tls_key: str | Path | None = None,
                 **limits: float) -> None:
        self.data_dir = Path(data_dir)
        self.settings = Settings.for_data_dir(self.data_dir, **limits)
        self.admin_token = (self.data_dir / "admin.token").read_text().strip()
        self.store = Store(self.data_dir / "collector.db")
        self.sock = sock or reserve_port()
        host, port = self.sock.getsockname()[:2]
        self.url = f"{'https' if tls_cert else 'http'}://{host}:{port}"
        self._tls = (tls_cert, tls_key)
        self._server: ServerThread | None = None

    def add_device(self, name: str, group: str | None = None) -> str:
        """Register a device directly in the store; return its token."""
        from edgectl.collector.auth import hash_token, new_token

        token = new_token()
        self.store.add_device(name, group, hash_token(token))
        return token

    def start(self) -> LocalCollector:
        if self.sock.fileno() == -1:  # closed by a previous stop(): same port, new socket
            host, port = self.url.rsplit("//", 1)[1].rsplit(":", 1)
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, int(port)))
        self._server = ServerThread(self.store, self.settings, self.sock, *self._tls).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def close(self) -> None:
        self.stop()
        self.sock.close()
        self.store.close()
