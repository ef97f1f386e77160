"""A database written by main's b07fc59 that holds the bad rows of issue 31 (string
counts, NaN and Infinity scores, "yesterday" timestamps, a list for latency, a manifest
with ``accuracy: "high"``) opens with this collector, on SQLite and PostgreSQL: it is
migrated, every page and status route answers 200, and no row is lost.

The rows are ``data/collector_b07fc59_rows.json``, made by that commit's own code from
the issue's requests (``data/make_b07fc59_rows.py``); here they go into a database at the
revision b07fc59 shipped (0003), built by the migrations, exactly as stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from alembic import command

from edgectl.cli import main
from edgectl.collector.server import LocalCollector
from edgectl.collector.store import database_url
from edgectl.collector.store import migrate as migrations
from edgectl.collector.store import schema as t
from edgectl.collector.store.engine import make_engine

ROWS = json.loads((Path(__file__).parent / "data" / "collector_b07fc59_rows.json").read_text())
TABLES = ("devices", "bundles", "desired", "decisions", "samples", "updates", "review_labels")


def old_database(url: str) -> None:
    """The schema of b07fc59 (revision 0003) holding its rows, as it stored them."""
    assert ROWS["alembic_revision"] == "0003"
    engine = make_engine(database_url(url), pool_size=1)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(sqlite_write=True)
            with conn.begin():
                command.upgrade(migrations.alembic_config(conn), ROWS["alembic_revision"])
                for name in TABLES:
                    if ROWS["tables"][name]:
                        conn.execute(sa.insert(t.metadata.tables[name]), ROWS["tables"][name])
    finally:
        engine.dispose()


def counts(store) -> dict[str, int]:
    with store.engine.connect() as db:
        return {n: db.execute(sa.select(sa.func.count()).select_from(
            t.metadata.tables[n])).scalar_one() for n in TABLES}


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db(request, tmp_path) -> str:
    """A new, empty database on each backend (not ``collector_db``: that one is already
    at the newest revision)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old' / 'collector.db'}"
    return request.getfixturevalue("pg_cluster").create_db()


def test_a_b07fc59_database_with_bad_rows_opens_and_every_page_answers(tmp_path, empty_db,
                                                                         cli_runner):
    collector_db = empty_db
    old_database(collector_db)
    # b07fc59 kept a record's JSON text as sent: a board's json.dumps of a huge float
    big = {**ROWS["tables"]["decisions"][0], "id": "big", "seq": 99, "device": "pi-1",
           "body": '{"id": "big", "seq": 99, "ts": 1700000000.0, "decision": "reject", '
                   '"label": "scratch", "score": 1e400, "latency_ms": {"total": 2E+308}}'}
    engine = make_engine(database_url(collector_db), pool_size=1)
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(t.metadata.tables["decisions"]), [big])
    finally:
        engine.dispose()
    c = LocalCollector(tmp_path / "collector", db=collector_db).start()  # migrates
    try:
        assert counts(c.store) == {n: len(ROWS["tables"][n]) + (n == "decisions")
                                   for n in TABLES}
        admin = {"Authorization": f"Bearer {c.admin_token}"}
        devices = [d["name"] for d in ROWS["tables"]["devices"]]
        pages = ["/", "/models", "/review", "/review?show=all", "/api/v1/fleet/status",
                 "/api/v1/devices", "/api/v1/bundles", "/api/v1/desired", "/metrics"]
        for d in devices:
            pages += [f"/devices/{d}", f"/devices/{d}?hours=100",
                      f"/api/v1/devices/{d}/decisions", f"/api/v1/devices/{d}/updates"]
        for path in pages:
            r = requests.get(c.url + path, headers=admin, timeout=30)
            assert r.status_code == 200, (path, r.text[:300])
        res = cli_runner.invoke(main, ["fleet", "status", "--server", c.url, "--token-file",
                                       str(tmp_path / "collector" / "admin.token")])
        assert res.exit_code == 0, res.output
        assert all(d in res.output for d in devices)
        # what can be shown is shown; what cannot is "–"
        rows = {r["device"]: r for r in requests.get(
            c.url + "/api/v1/fleet/status", headers=admin, timeout=30).json()}
        assert rows["good-1"]["total"] == 3 and rows["good-1"]["p95_ms"] == 9.0
        assert rows["pi-1"]["total"] is None and rows["pi-2"]["p95_ms"] is None
        assert rows["pi-3"]["unsent"] is None and rows["pi-4"]["fps"] is None
        models = requests.get(c.url + "/models", headers=admin, timeout=30).text
        assert "90.0 %" in models and models.count("<td class=\"n\">–</td>") >= 2
        # the NaN score of a stored record reads back as null, the record kept
        got = {x["id"]: x for x in requests.get(c.url + "/api/v1/devices/pi-1/decisions",
                                                headers=admin, timeout=30).json()}
        assert set(got) == {"n1", "n2", "n3", "big"} and got["n1"]["score"] is None
        assert got["big"]["score"] is None and got["big"]["label"] == "scratch"
        with c.store.engine.connect() as db:       # rewritten in the database itself
            body = db.execute(sa.select(t.decisions.c.body).where(
                t.decisions.c.id == "big")).scalar_one()
        assert json.loads(body)["score"] is None and "1e400" not in body, body
        assert got["n1"]["label"] == "scratch" and got["n2"]["ts"] == "yesterday"
    finally:
        c.close()


def test_the_migration_rewrites_only_texts_that_need_it():
    import importlib.util

    path = migrations.MIGRATIONS / "versions" / "0004_finite_json.py"
    spec = importlib.util.spec_from_file_location("m0004", path)
    assert spec is not None and spec.loader is not None
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    assert m.fixed('{"label": "NaN-ish", "x": "Infinity", "n": 1}') is None
    assert m.fixed('{"a": NaN, "b": [Infinity, -Infinity, 2.5], "c": "NaN"}') == \
        '{"a": null, "b": [null, null, 2.5], "c": "NaN"}'
    assert m.fixed('{"a": "x\\u0000y", "b": "\\ud800"}') == '{"a": "x\ufffdy", "b": "\ufffd"}'
    assert m.fixed('{"é": "\\ud83d\\ude00"}') is None  # a proper pair is kept
    assert m.fixed("not json") is None
    assert m.fixed('{"s": 1e400, "t": -2E+308, "u": 1e300}') == \
        '{"s": null, "t": null, "u": 1e+300}'
