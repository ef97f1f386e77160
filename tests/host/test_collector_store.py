"""The collector's storage on both backends: migrations from the pre-SQLAlchemy SQLite
schema (every row kept, the original untouched on failure), the ``--db`` guard, the
``migrate`` command, retention, and exactly-once rows with 4 workers on PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from edgectl.cli import main
from edgectl.collector.store import Store, StoreError
from edgectl.collector.store import migrate as M

# The schema of host/edgectl/collector/store.py on main before this change (SQLite only,
# no Alembic), verbatim: the database every existing collector has on disk.
LEGACY_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    name TEXT PRIMARY KEY,
    grp TEXT,
    token_hash TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    last_seen REAL,
    heartbeat TEXT
);
CREATE TABLE IF NOT EXISTS decisions (
    device TEXT NOT NULL,
    id TEXT NOT NULL,
    seq INTEGER,
    ts REAL,
    label TEXT,
    decision TEXT,
    model_version TEXT,
    body TEXT NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (device, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS samples (
    device TEXT NOT NULL,
    id TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (device, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bundles (
    version TEXT PRIMARY KEY,
    name TEXT,
    filename TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS desired (
    kind TEXT NOT NULL CHECK (kind IN ('device', 'group')),
    target TEXT NOT NULL,
    version TEXT NOT NULL REFERENCES bundles(version),
    updated REAL NOT NULL,
    allow_downgrade INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, target)
);
CREATE TABLE IF NOT EXISTS updates (
    device TEXT NOT NULL,
    id TEXT NOT NULL,
    ts REAL,
    version TEXT,
    outcome TEXT NOT NULL,
    reason TEXT,
    body TEXT NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (device, id)
);
"""


def legacy_db(path: Path, n: int = 300, allow_downgrade_column: bool = True) -> dict[str, int]:
    """A collector.db as main's store made it, with rows in every table; its row counts."""
    schema = LEGACY_SCHEMA
    if not allow_downgrade_column:  # older still: before desired.allow_downgrade
        schema = schema.replace("    allow_downgrade INTEGER NOT NULL DEFAULT 0,\n", "")
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema)
    with db:
        for d in ("pi-1", "pi-2"):
            db.execute("INSERT INTO devices VALUES (?,?,?,?,?,?)",
                       (d, "line-1", f"hash-{d}", 1.0, 2.0, json.dumps({"fps": 9.5})))
            db.executemany("INSERT INTO decisions VALUES (?,?,?,?,?,?,?,?,?)", [
                (d, f"r{i}", i, 100.0 + i, "ok", "ok", "v1",
                 json.dumps({"id": f"r{i}", "seq": i, "decision": "ok"}), 200.0)
                for i in range(n)])
            db.execute("INSERT INTO samples VALUES (?,?,?,?,?,?)",
                       (d, "r1", f"samples/{d}/r1.jpg", 123, "image/jpeg", 3.0))
            db.execute("INSERT INTO updates VALUES (?,?,?,?,?,?,?,?)",
                       (d, "u1", 4.0, "v1", "applied", None,
                        json.dumps({"id": "u1", "outcome": "applied", "version": "v1"}), 5.0))
        db.execute("INSERT INTO bundles VALUES (?,?,?,?,?,?,?)",
                   ("v1", "tiny", "abc.tar", "abc", 10, "{}", 6.0))
        db.execute("INSERT INTO desired(kind, target, version, updated) VALUES "
                   "('group', 'line-1', 'v1', 7.0)")
    db.close()  # the last connection: SQLite folds the WAL back in
    return {"devices": 2, "decisions": 2 * n, "samples": 2, "bundles": 1, "desired": 1,
            "updates": 2}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("allow_downgrade_column", [True, False])
def test_a_collector_db_from_main_migrates_with_every_row(tmp_path, allow_downgrade_column):
    path = tmp_path / "collector.db"
    counts = legacy_db(path, allow_downgrade_column=allow_downgrade_column)
    original = sha(path)
    store = Store(path)
    try:
        assert store.decision_count() == counts["decisions"]
        assert store.decision_count("pi-1") == counts["decisions"] // 2
        assert store.sample_count() == counts["samples"]
        assert [d["name"] for d in store.devices()] == ["pi-1", "pi-2"]
        assert store.device("pi-1")["heartbeat"] == {"fps": 9.5}
        assert store.device_for_token_hash("hash-pi-2") == "pi-2"
        assert store.desired_for("pi-1")["version"] == "v1"
        assert store.desired_for("pi-1")["allow_downgrade"] is False
        assert store.update_reports("pi-2")[0]["outcome"] == "applied"
        assert [r["seq"] for r in store.decisions("pi-1", limit=3)] == [0, 1, 2]
        # the old rows still key idempotence; new rows go in beside them
        assert store.add_decisions("pi-1", [{"id": "r1"}, {"id": "new-1"}]) == (1, 1)
        with store.engine.connect() as conn:
            assert M.current(conn) == M.head()
            indexes = {i["name"] for i in sa.inspect(conn).get_indexes("decisions")}
        assert {"ix_decisions_device_ts", "ix_decisions_ts"} <= indexes
    finally:
        store.close()
    (backup,) = tmp_path.glob("collector.db.bak-legacy-*")
    assert sha(backup) == original                  # the pre-migration file, byte for byte
    assert not list(tmp_path.glob("*.migrating*"))
    assert path.stat().st_mode & 0o777 == 0o640
    # a second start finds it current: no new backup
    Store(path).close()
    assert len(list(tmp_path.glob("collector.db.bak-*"))) == 1


def test_a_failed_migration_leaves_the_original_untouched(tmp_path):
    path = tmp_path / "collector.db"
    legacy_db(path, n=20)
    with sqlite3.connect(path) as db:          # something revision 0002 cannot create over
        db.execute("CREATE TABLE ix_decisions_ts (x)")
    db.close()
    before = sha(path)
    with pytest.raises(StoreError, match="original is untouched"):
        Store(path)
    assert sha(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["collector.db"]


def test_a_new_postgres_db_gets_the_schema_and_is_current(pg_cluster):
    url = pg_cluster.create_db()
    with pytest.raises(StoreError, match="migrate"):
        Store(url, migrate=False)             # a worker refuses an unmigrated database
    Store(url).close()
    store = Store(url, migrate=False)
    try:
        with store.engine.connect() as conn:
            assert M.current(conn) == M.head()
            assert M.timescaledb_available(conn) in (True, False)
    finally:
        store.close()


@pytest.mark.parametrize("args,needle", [
    (["--db", "mysql://u@h/db", "migrate"], "unsupported database 'mysql'"),
    (["--db", "sqlite://", "migrate"], "sqlite needs a file path"),
    (["--db", "postgresql://u:secret@127.0.0.1:1", "migrate"], "without a database name"),
    (["--db", "postgresql://u:secret@127.0.0.1:1/x", "migrate"], "database postgresql://"),
    (["--db", "sqlite:///{tmp}/c.db", "--workers", "2"], "--workers > 1 needs PostgreSQL"),
])
def test_a_bad_db_is_one_error_line_and_a_nonzero_exit(cli_runner, tmp_path, args, needle):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = cli_runner.invoke(main, ["serve", "--data-dir", str(tmp_path), *args])
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.output
    assert "secret" not in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrate_command(cli_runner, tmp_path, pg_cluster, backend):
    if backend == "sqlite":
        legacy_db(tmp_path / "c.db", n=5)
        db = f"sqlite:///{tmp_path / 'c.db'}"
    else:
        db = pg_cluster.create_db()
    r = cli_runner.invoke(main, ["serve", "--data-dir", str(tmp_path), "--db", db, "migrate"])
    assert r.exit_code == 0, r.output
    # (the command's own line; an earlier in-process test may leave logging noise around it)
    (last,) = [ln for ln in r.output.splitlines() if ln.startswith("database ")]
    assert f"at revision {M.head()}" in last
    assert ("(backup " in last) == (backend == "sqlite")
    store = Store(db, migrate=False)
    try:
        assert store.decision_count() == (10 if backend == "sqlite" else 0)
    finally:
        store.close()


def test_retention_deletes_only_old_decisions(collector_db):
    from edgectl.collector.server import Retention

    store = Store(collector_db)
    try:
        store.add_device("a", None, "h")
        now = 10 * 86400.0
        recs = [{"id": "old", "ts": now - 8 * 86400}, {"id": "new", "ts": now - 86400},
                {"id": "no-ts-old"}]
        store.add_decisions("a", recs, now=now - 9 * 86400)   # received 9 days ago
        store.add_decisions("a", [{"id": "no-ts-new"}], now=now)
        assert Retention(store, days=7).run_once(now=now) == 2
        assert sorted(r["id"] for r in store.decisions("a")) == ["new", "no-ts-new"]
    finally:
        store.close()


def test_a_token_lookup_is_kept_for_its_ttl_and_a_rotation_refuses_the_old_token(collector_db):
    """Two stores on one database stand for two workers: the one that rotates refuses the
    old token at once; the other within its TTL; unknown tokens are never remembered."""
    worker1, worker2 = Store(collector_db), Store(collector_db, token_ttl_s=0.3)
    try:
        assert worker2.device_for_token_hash("new") is None      # a miss is not kept ...
        worker1.add_device("a", None, "old")
        assert worker2.cached_device("old") is None
        assert worker2.device_for_token_hash("old") == "a"       # ... a new device works
        assert worker1.device_for_token_hash("old") == "a"
        assert worker2.cached_device("old") == "a"               # kept: no query
        assert worker1.set_device_token("a", "new")
        assert worker1.cached_device("old") is None              # forgotten here at once
        assert worker1.device_for_token_hash("old") is None
        assert worker2.cached_device("old") == "a"               # the other: for its TTL
        deadline = time.monotonic() + 5
        while worker2.cached_device("old") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker2.cached_device("old") is None
        assert worker2.device_for_token_hash("old") is None      # the database decides
        assert worker2.device_for_token_hash("new") == "a"
    finally:
        worker1.close()
        worker2.close()


# -- several workers on PostgreSQL -------------------------------------------------------


def _children(pid: int) -> int:
    n = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                n += 1
        except (OSError, ValueError, IndexError):
            pass
    return n


def test_postgres_hot_path_drops_a_broken_connection_and_reconnects(pg_cluster):
    """The batch insert and the token lookup run on the bare driver: when the server drops
    the connection (a restart), that one call fails and the next gets a new connection."""
    import psycopg

    url = pg_cluster.create_db()
    store = Store(url)
    try:
        store.add_device("a", None, "h")
        assert store.add_decisions("a", [{"id": "1"}]) == (1, 0)
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        with pytest.raises(psycopg.OperationalError):
            store.add_decisions("a", [{"id": "2"}])
        assert store.add_decisions("a", [{"id": "2"}, {"id": "1"}]) == (1, 1)
        assert store.device_for_token_hash("h") == "a"
        assert store.decision_count() == 2
    finally:
        store.close()


def test_four_workers_store_resent_batches_exactly_once(tmp_path, pg_cluster):
    """4 uvicorn workers on one PostgreSQL; 50 devices each send 2 batches 3 times, all at
    once over 32 connections: every record is stored once, and the accepted counts of all
    the answers add up to exactly the rows stored (no worker counts a row twice)."""
    import socket

    db = pg_cluster.create_db()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-c", "from edgectl.cli import main; main()",
                             "serve", "--data-dir", str(data), "--db", db, "--port", str(port),
                             "--workers", "4"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).ok and _children(proc.pid) >= 4:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "collector with 4 workers did not start"
            time.sleep(0.2)
        admin = {"Authorization": f"Bearer {(data / 'admin.token').read_text().strip()}"}
        session = requests.Session()
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=32))

        # the same device registered by 8 callers at once: exactly one wins
        with ThreadPoolExecutor(8) as ex:
            codes = list(ex.map(lambda _: session.post(f"{url}/devices", json={"name": "dup"},
                                                       headers=admin, timeout=30).status_code,
                                range(8)))
        assert sorted(codes) == [201] + [409] * 7

        tokens = {}
        for i in range(50):
            r = session.post(f"{url}/devices", json={"name": f"d{i:02d}"}, headers=admin,
                             timeout=30)
            assert r.status_code == 201, r.text
            tokens[f"d{i:02d}"] = r.json()["token"]
        batches = {d: [[{"id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{d}/{b}/{k}")),
                         "seq": b * 20 + k, "ts": 1e9 + k, "decision": "ok", "label": "ok"}
                        for k in range(20)] for b in range(2)] for d in tokens}
        jobs = [(d, b) for _ in range(3) for d in tokens for b in range(2)]

        def send(job):
            d, b = job
            r = session.post(f"{url}/devices/{d}/decisions", json={"records": batches[d][b]},
                             headers={"Authorization": f"Bearer {tokens[d]}"}, timeout=60)
            assert r.status_code == 200, r.text
            return r.json()

        with ThreadPoolExecutor(32) as ex:
            answers = list(ex.map(send, jobs))
        assert sum(a["received"] for a in answers) == 50 * 2 * 20 * 3
        assert sum(a["accepted"] for a in answers) == 50 * 2 * 20
        assert sum(a["duplicates"] for a in answers) == 50 * 2 * 20 * 2

        # the same sample sent to several workers at once: one file, one row
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, format="JPEG")
        h = {"Authorization": f"Bearer {tokens['d00']}", "Content-Type": "image/jpeg"}
        with ThreadPoolExecutor(8) as ex:
            got = list(ex.map(lambda _: session.put(f"{url}/devices/d00/samples/s1",
                                                    data=buf.getvalue(), headers=h,
                                                    timeout=30).json(), range(8)))
        assert sum(g["stored"] for g in got) == 1
        assert [p.name for p in (data / "samples" / "d00").iterdir()] == ["s1.jpg"]

        # /metrics merges every worker's request counters (prometheus multiprocess files)
        from prometheus_client.parser import text_string_to_metric_families

        text = session.get(f"http://127.0.0.1:{port}/metrics", headers=admin, timeout=30).text
        counted = sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                      if s.name == "edgectl_collector_requests_total"
                      and s.labels["route"] == "/api/v1/devices/{device}/decisions")
        assert counted == len(jobs)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    store = Store(db, migrate=False)
    try:
        assert store.decision_count() == 50 * 2 * 20
        assert all(store.decision_count(d) == 40 for d in tokens)
        assert store.sample_count("d00") == 1
        assert len(store.devices()) == 51
    finally:
        store.close()
    assert _children(proc.pid) == 0 or proc.returncode is not None
    assert os.path.getsize(data / "admin.token") > 0


def test_admin_token_made_by_many_processes_at_once_is_one_whole_token(tmp_path):
    """Workers starting together: every one reads the same complete token."""
    code = ("import sys; from edgectl.collector.auth import ensure_token_file, "
            "read_token_file; print(read_token_file(ensure_token_file(sys.argv[1])))")
    path = tmp_path / "admin.token"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                              text=True) for _ in range(8)]
    tokens = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert tokens == {path.read_text().strip()} and len(tokens.pop()) >= 40
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["admin.token"]


def test_odd_field_types_are_kept_in_the_body_and_typed_in_columns(collector_db):
    """A record's seq/ts/label of an unexpected type never fails a batch: the body keeps
    the record as sent, the indexed columns hold NULL (the same on both backends)."""
    store = Store(collector_db)
    try:
        store.add_device("a", None, "h")
        recs = [{"id": "x", "seq": 1, "ts": 1}, {"id": "y", "ts": 2.5, "seq": None},
                {"id": "z", "seq": 2**40}, {"id": "q", "ts": True, "seq": "abc", "label": 5}]
        assert store.add_decisions("a", recs) == (4, 0)
        assert store.add_decisions("a", recs[:2]) == (0, 2)
        got = store.decisions("a")
        assert [r["id"] for r in got] == ["q", "y", "x", "z"]     # NULL seq first, then seq
        assert got[0] == recs[3]
    finally:
        store.close()
