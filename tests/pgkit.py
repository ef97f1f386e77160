"""A throwaway PostgreSQL cluster for tests: ``initdb`` in a temp folder, ``pg_ctl`` on a
free port on 127.0.0.1 (and a Unix socket in that folder), trust auth, stopped and
deleted at the end. Runs the server as the ``postgres`` system user when the tests run
as root (PostgreSQL refuses root), else as the current user. Never touches a cluster
the ``postgresql`` package may have set up itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from netkit import free_port


def pg_bindir() -> Path | None:
    """``$PG_BINDIR``, or the folder of the newest ``initdb`` (Debian's
    ``/usr/lib/postgresql/*/bin``: tests/syskit.py), or None."""
    from syskit import find

    env = os.environ.get("PG_BINDIR")
    if env:
        return Path(env)
    initdb = find("initdb")
    return Path(initdb).parent if initdb else None


class PgCluster:
    """One cluster; ``url(db)`` gives a ``postgresql://`` URL, ``create_db()`` a new
    empty database for one test."""

    def __init__(self, bindir: Path, durable: bool = False,
                 synchronous_commit: str | None = None) -> None:
        self.bindir = bindir
        self.durable = durable  # fsync on (benchmarks); tests run with fsync off
        # Tests: off (nothing is on disk anyway). Durable: PostgreSQL's own default (on)
        # unless asked; the benchmark says which it ran with.
        self.synchronous_commit = synchronous_commit or ("on" if durable else "off")
        self.root = Path(tempfile.mkdtemp(prefix="edgectl-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.root, self.user)
            os.chmod(self.root, 0o700)

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.user, "--", *args] if self.user else list(args)

    def start(self) -> PgCluster:
        subprocess.run(self._cmd(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "edge",
                                 "--auth=trust", "-E", "UTF8", "--no-sync"),
                       check=True, capture_output=True, cwd=self.root)
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                f"-c unix_socket_directories={self.root} "
                f"-c synchronous_commit={self.synchronous_commit} "
                "-c max_connections=200")
        if not self.durable:
            opts += " -c fsync=off -c full_page_writes=off"
        subprocess.run(self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts,
                                 "-l", str(self.root / "log"), "-w", "-t", "60", "start"),
                       check=True, capture_output=True, cwd=self.root)
        return self

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://edge@127.0.0.1:{self.port}/{db}"

    def create_db(self, template: str | None = None) -> str:
        """A new database (empty, or a copy of database ``template``); its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'
                         + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def clean_collector_db(self) -> str:
        """A database at the collector's newest schema, made once and emptied on every
        call (TRUNCATE is ~50× cheaper than CREATE DATABASE); its URL."""
        import psycopg

        if getattr(self, "_clean", None) is None:
            from edgectl.collector.store import Store

            self._clean = self.create_db()
            Store(self._clean).close()
        with psycopg.connect(self._clean, autocommit=True) as conn:
            conn.execute("TRUNCATE devices, decisions, samples, bundles, desired, updates, "
                         "review_labels, sessions")
        return self._clean

    def stop(self) -> None:
        try:
            subprocess.run(self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m",
                                     "immediate", "-w", "stop"),
                           capture_output=True, timeout=60, cwd=self.root)
        finally:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    shutil.rmtree(self.root)
                    break
                except OSError:
                    time.sleep(0.2)
