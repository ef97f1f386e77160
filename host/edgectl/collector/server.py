"""Run the collector on uvicorn: in the foreground (``edgectl serve``, one process or
several workers), or in a thread (tests, benchmarks, the demo) on a socket the caller
already bound.

Several workers: the parent migrates the database and creates the admin token once, then
uvicorn starts ``--workers`` processes, each building its app with ``app_from_env`` from
the ``CollectorConfig`` the parent put in ``$EDGECTL_COLLECTOR``. They share nothing but
the database (PostgreSQL) and the data dir, so idempotence and uniqueness are the
database's constraints, and files are created whole (temp file, then link or rename).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from edgectl.collector.app import create_app
from edgectl.collector.metrics import MULTIPROC_ENV
from edgectl.collector.settings import DEFAULT_SESSION_HOURS, Settings
from edgectl.collector.store import Store

ENV = "EDGECTL_COLLECTOR"
RETENTION_EVERY_S = 3600.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectorConfig:
    """What a worker process needs to build the app (JSON in ``$EDGECTL_COLLECTOR``)."""

    db: str
    data_dir: str
    admin_token_file: str | None = None
    stale_after_s: float = 120.0
    api_docs: bool = False
    https: bool = False
    session_s: float = DEFAULT_SESSION_HOURS * 3600.0

    def settings(self) -> Settings:
        return Settings.for_data_dir(self.data_dir, self.admin_token_file,
                                     stale_after_s=self.stale_after_s, api_docs=self.api_docs,
                                     https=self.https, session_max_age_s=self.session_s)


def app_from_env() -> FastAPI:
    """The app of one worker process (uvicorn's ``factory``): the database must already
    be at the newest revision (the parent migrated it)."""
    cfg = CollectorConfig(**json.loads(os.environ[ENV]))
    return create_app(Store(cfg.db, migrate=False), cfg.settings())


def run_collector(cfg: CollectorConfig, host: str, port: int, workers: int = 1,
                  tls_cert: str | Path | None = None, tls_key: str | Path | None = None,
                  retention_days: float = 0.0) -> None:
    """Migrate, then serve in the foreground until interrupted."""
    settings = cfg.settings()  # the admin token exists before any worker starts
    store = Store(cfg.db)      # migrates (SQLite: backup first)
    retention = Retention(store, retention_days).start() if retention_days > 0 else None
    cleanup: list[Any] = []
    try:
        if workers == 1:
            make_server(store, settings, host, port, tls_cert, tls_key, log_level="info").run()
            return
        os.environ[ENV] = json.dumps(asdict(cfg))
        # Each worker counts its requests in its own files here; /metrics merges them.
        prom_dir = tempfile.mkdtemp(prefix="edgectl-metrics-")
        os.environ[MULTIPROC_ENV] = prom_dir
        cleanup.append(lambda: shutil.rmtree(prom_dir, ignore_errors=True))
        uvicorn.run("edgectl.collector.server:app_from_env", factory=True, workers=workers,
                    host=host, port=port, log_level="info", access_log=False, lifespan="off",
                    server_header=False, timeout_graceful_shutdown=5,
                    ssl_certfile=str(tls_cert) if tls_cert else None,
                    ssl_keyfile=str(tls_key) if tls_key else None)
    finally:
        if retention is not None:
            retention.stop()
        for fn in cleanup:
            fn()
        store.close()


class Retention:
    """Delete decisions older than ``days``, now and every hour, on a daemon thread (one
    per collector, in the parent process when there are several workers)."""

    def __init__(self, store: Store, days: float, every_s: float = RETENTION_EVERY_S) -> None:
        self.store, self.days, self.every_s = store, days, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> Retention:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def run_once(self, now: float | None = None) -> int:
        return self.store.prune_decisions((now or time.time()) - self.days * 86400.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                n = self.run_once()
                if n:
                    log.info("retention: deleted %d decisions older than %g days", n, self.days)
            except Exception:  # noqa: BLE001 - retention must never take the collector down
                log.exception("retention failed; will retry")
            self._stop.wait(self.every_s)


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
    a server starts on it (a collector that is "down" with a known address).

    Made with ``IPPROTO_TCP`` named: asyncio sets ``TCP_NODELAY`` on accepted connections
    only when the listening socket's ``proto`` says TCP, and without it every keep-alive
    answer (uvicorn writes head and body apart) waited ~40 ms for the client's delayed
    ACK (measured: 45 ms per request for a 0.7 ms handler, 5 ms with it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
                 db: str | None = None, **limits: float) -> None:
        self.data_dir = Path(data_dir)
        self.settings = Settings.for_data_dir(self.data_dir, admin_token_file=None,
                                              https=tls_cert is not None, **limits)
        self.admin_token = (self.data_dir / "admin.token").read_text().strip()
        self.store = Store(db or self.data_dir / "collector.db")
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
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
