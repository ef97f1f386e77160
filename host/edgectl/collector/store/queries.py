"""``Store``: every query the collector runs, the same on SQLite and PostgreSQL.

Idempotence is the database's: decisions, samples and update reports are inserted with
``ON CONFLICT DO NOTHING`` on their ``(device, id)`` key and ``RETURNING`` tells which
rows were new, so a batch sent twice (to one worker or to two at once) is accepted twice
and stored once. A device name and a token hash are unique constraints; a bundle version
names one sha256 forever. Reads return plain dicts, ready for JSON and for pages.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL

from edgectl.collector.store import pghot
from edgectl.collector.store import schema as t
from edgectl.collector.store.engine import database_url, is_sqlite, make_engine
from edgectl.collector.store.sessions import Sessions
from edgectl.collector.store.views import Views
from edgectl.collector.values import loads, obj

# A worker trusts a device token it looked up for this long: the lookup was a query on
# every device request (a round trip, a pool checkout and a thread hop each), and a token
# replaced through another worker is refused everywhere within this bound (docs/collector.md).
TOKEN_TTL_S = 5.0
TOKEN_CACHE_MAX = 100_000  # entries; past it the cache starts again (memory stays bounded)


class DuplicateError(KeyError):
    """The row already exists with different content (a device name, a bundle version)."""


class Store(Views, Sessions):
    """Devices, decisions, samples, bundles, desired versions, update reports; the page
    reads (``Views``) and page sessions (``Sessions``).

    ``db`` is a ``--db`` value (``sqlite:///PATH``, a bare path, ``postgresql://…``).
    With ``migrate`` (the default) the schema is brought to the newest revision first
    (``migrate.upgrade``: on SQLite a backup is kept and the original is untouched if it
    fails); without, an out-of-date database is a ``StoreError`` (workers use this: the
    parent process migrates once before it starts them).
    """

    def __init__(self, db: str | os.PathLike[str] | URL, migrate: bool = True,
                 pool_size: int = 8, token_ttl_s: float = TOKEN_TTL_S) -> None:
        from edgectl.collector.store import migrate as migrations

        self.url = db if isinstance(db, URL) else database_url(db)
        self.sqlite = is_sqlite(self.url)
        self.path = Path(str(self.url.database)) if self.sqlite else None
        if migrate:
            migrations.upgrade(self.url)
        self.engine = make_engine(self.url, pool_size=pool_size)
        if not migrate:
            migrations.check_current(self.engine)
        # SQLite has one writer at a time: threads of this process queue here rather than
        # in SQLite's busy handler; other processes wait on the busy timeout.
        self._write_lock = threading.Lock() if self.sqlite else None
        self._insert = sqlite.insert if self.sqlite else postgresql.insert
        # token hash -> (device, monotonic expiry): see ``cached_device``
        self.token_ttl_s = token_ttl_s
        self._tokens: dict[str, tuple[str, float]] = {}
        self._tokens_gen = 0

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return str(self.url.get_backend_name())

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self._write_lock or nullcontext(), self.engine.connect() as conn:
            if self.sqlite:
                conn = conn.execution_options(sqlite_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()

    # -- devices -------------------------------------------------------------------------

    def add_device(self, name: str, group: str | None, token_hash: str,
                   now: float | None = None) -> None:
        """Register a device; ``DuplicateError`` if the name (or token) is taken."""
        try:
            with self._write() as db:
                db.execute(sa.insert(t.devices).values(name=name, grp=group,
                                                       token_hash=token_hash,
                                                       created=now or time.time()))
        except sa.exc.IntegrityError as err:
            raise DuplicateError(f"device {name!r} already exists") from err

    def set_device_token(self, name: str, token_hash: str) -> bool:
        """Replace a device's token hash (rotation); False if the device is unknown."""
        with self._write() as db:
            cur = db.execute(sa.update(t.devices).where(t.devices.c.name == name)
                             .values(token_hash=token_hash))
            changed = cur.rowcount == 1
        self._forget_tokens()  # this process refuses the old token at once
        return changed

    def cached_device(self, token_hash: str) -> str | None:
        """The device of ``token_hash`` if ``device_for_token_hash`` found it in the last
        ``token_ttl_s`` seconds, else None; no I/O (the request path asks this first).

        Only tokens found are kept, never misses: a new device's token works at once. A
        token replaced by another process (another worker; ``set_device_token`` here
        forgets at once) keeps working in this one for at most ``token_ttl_s``.
        """
        hit = self._tokens.get(token_hash)
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    def device_for_token_hash(self, token_hash: str) -> str | None:
        """The device whose token hashes to ``token_hash``, from the database (and kept for
        ``cached_device``)."""
        gen = self._tokens_gen
        if not self.sqlite:
            name = self._on_driver(pghot.device_for_token_hash, token_hash)  # see pghot
        else:
            with self._read() as db:
                name = db.execute(sa.select(t.devices.c.name)
                                  .where(t.devices.c.token_hash == token_hash)).scalar()
        if name is None:
            return None
        if gen == self._tokens_gen:  # no token changed here while we read: keep it
            if len(self._tokens) >= TOKEN_CACHE_MAX:
                self._tokens.clear()
            self._tokens[token_hash] = (str(name), time.monotonic() + self.token_ttl_s)
        return str(name)

    def _forget_tokens(self) -> None:
        self._tokens_gen += 1
        self._tokens.clear()

    _device_cols = (t.devices.c.name, t.devices.c.grp, t.devices.c.created,
                    t.devices.c.last_seen, t.devices.c.heartbeat)

    def device(self, name: str) -> dict[str, Any] | None:
        with self._read() as db:
            row = db.execute(sa.select(*self._device_cols)
                             .where(t.devices.c.name == name)).mappings().first()
        return None if row is None else _device_dict(row)

    def devices(self) -> list[dict[str, Any]]:
        with self._read() as db:
            rows = db.execute(sa.select(*self._device_cols)
                              .order_by(t.devices.c.name)).mappings().all()
        return [_device_dict(r) for r in rows]

    def record_heartbeat(self, device: str, body: dict[str, Any], now: float | None = None) -> None:
        with self._write() as db:
            db.execute(sa.update(t.devices).where(t.devices.c.name == device)
                       .values(last_seen=now or time.time(),
                               heartbeat=json.dumps(body, sort_keys=True)))

    def touch(self, device: str, now: float | None = None) -> None:
        """Note that ``device`` was seen (any authenticated request)."""
        with self._write() as db:
            db.execute(sa.update(t.devices).where(t.devices.c.name == device)
                       .values(last_seen=now or time.time()))

    # -- decisions -----------------------------------------------------------------------

    def add_decisions(self, device: str, records: Iterable[dict[str, Any]],
                      now: float | None = None,
                      texts: list[str] | None = None) -> tuple[int, int]:
        """Insert records keyed by ``(device, id)``; return ``(accepted, duplicates)``.

        A repeat of an id already stored (in this batch, an earlier one, or one another
        worker is storing right now) is a duplicate: counted, not stored again. ``texts``:
        each record's JSON text as the device sent it (``api.batch_body``), kept as its
        body; without, the body is ``json.dumps`` of the record. Either reads back as the
        same record.
        """
        received = now or time.time()
        records = list(records)
        if not records:
            return 0, 0
        bodies = texts if texts is not None and len(texts) == len(records) else \
            [json.dumps(r, sort_keys=True) for r in records]
        if not self.sqlite:
            return self._pg_add_decisions(device, records, bodies, received)
        rows = [{"device": device, "id": str(r["id"]), "seq": _int(r.get("seq")),
                 "ts": _float(r.get("ts")), "label": _text(r.get("label")),
                 "decision": _text(r.get("decision")),
                 "model_version": _text(r.get("model_version")),
                 "body": body, "received": received}
                for r, body in zip(records, bodies, strict=True)]
        with self._write() as db:
            stmt = (self._insert(t.decisions)
                    .on_conflict_do_nothing(index_elements=["device", "id"])
                    .returning(t.decisions.c.id))
            accepted = len(db.execute(stmt, rows).all())
            db.execute(sa.update(t.devices).where(t.devices.c.name == device)
                       .values(last_seen=received))
        return accepted, len(rows) - accepted

    def _pg_add_decisions(self, device: str, records: list[dict[str, Any]], bodies: list[str],
                          received: float) -> tuple[int, int]:
        # The bare psycopg connection from SQLAlchemy's pool: this is the collector's hot
        # path, and SQLAlchemy's execution layer and psycopg's text-format arrays cost
        # more per record than the database does (see pghot).
        columns = {"id": [str(r["id"]) for r in records],
                   "seq": [_int(r.get("seq")) for r in records],
                   "ts": [_float(r.get("ts")) for r in records],
                   "label": [_text(r.get("label")) for r in records],
                   "decision": [_text(r.get("decision")) for r in records],
                   "model_version": [_text(r.get("model_version")) for r in records],
                   "body": bodies}
        accepted = self._on_driver(pghot.insert_decisions, device, columns, received)
        return accepted, len(records) - accepted

    def _on_driver(self, fn: Any, *args: Any) -> Any:
        """``fn(psycopg_connection, *args)`` on a connection from the pool. A connection
        that broke (the server restarted) is dropped, not pooled again: that request fails
        (the board retries it; every write is idempotent) and the next one reconnects."""
        conn = self.engine.raw_connection()
        driver = conn.driver_connection  # psycopg's connection; None only once invalidated
        try:
            return fn(driver, *args)
        except Exception:
            if driver is None or driver.closed or driver.broken:
                conn.invalidate()
            raise
        finally:
            conn.close()  # back to the pool

    def decision_count(self, device: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(t.decisions)
        if device is not None:
            q = q.where(t.decisions.c.device == device)
        with self._read() as db:
            return int(db.execute(q).scalar_one())

    def decisions(self, device: str, limit: int = 1000,
                  after_seq: int = -1) -> list[dict[str, Any]]:
        d = t.decisions.c
        q = (sa.select(d.body).where(d.device == device,
                                     sa.func.coalesce(d.seq, 0) > after_seq)
             .order_by(d.seq.asc().nulls_first(), d.id).limit(limit))
        with self._read() as db:
            bodies: list[Any] = list(db.execute(q).scalars())
        return [loads(b) for b in bodies]

    def decision_stats(self) -> dict[str, dict[str, int]]:
        """Per device: decisions received, and how many per decision kind."""
        d = t.decisions.c
        q = sa.select(d.device, d.decision, sa.func.count().label("n")).group_by(d.device,
                                                                                d.decision)
        out: dict[str, dict[str, int]] = {}
        with self._read() as db:
            for r in db.execute(q).mappings():
                s = out.setdefault(r["device"], {"received": 0})
                s["received"] += r["n"]
                s[str(r["decision"])] = r["n"]
        return out

    def prune_decisions(self, before_ts: float) -> int:
        """Retention: delete decisions older than ``before_ts`` (their own ``ts``, else the
        time they were received); return how many."""
        d = t.decisions.c
        old = sa.or_(d.ts < before_ts, sa.and_(d.ts.is_(None), d.received < before_ts))
        with self._write() as db:
            return int(db.execute(sa.delete(t.decisions).where(old)).rowcount or 0)

    # -- samples -------------------------------------------------------------------------

    def has_sample(self, device: str, sample_id: str) -> bool:
        s = t.samples.c
        with self._read() as db:
            return db.execute(sa.select(1).where(s.device == device,
                                                 s.id == sample_id)).first() is not None

    def add_sample(self, device: str, sample_id: str, path: str, size: int, content_type: str,
                   now: float | None = None) -> bool:
        """Record a stored sample file; False if it was already there (a repeat)."""
        stmt = (self._insert(t.samples).values(device=device, id=sample_id, path=path,
                                               bytes=size, content_type=content_type,
                                               received=now or time.time())
                .on_conflict_do_nothing(index_elements=["device", "id"])
                .returning(t.samples.c.id))
        with self._write() as db:
            return db.execute(stmt).first() is not None

    def sample_count(self, device: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(t.samples)
        if device is not None:
            q = q.where(t.samples.c.device == device)
        with self._read() as db:
            return int(db.execute(q).scalar_one())

    # -- bundles and desired versions ----------------------------------------------------

    def add_bundle(self, version: str, name: str | None, filename: str, sha256: str, size: int,
                   manifest: dict[str, Any], now: float | None = None) -> bool:
        """Register a bundle; False if the same version with the same sha256 exists.

        ``DuplicateError`` if the version exists with different content: a version names
        one bundle forever, so boards can trust "same version, same model".
        """
        stmt = (self._insert(t.bundles).values(version=version, name=name, filename=filename,
                                               sha256=sha256, bytes=size,
                                               manifest=json.dumps(manifest),
                                               created=now or time.time())
                .on_conflict_do_nothing(index_elements=["version"])
                .returning(t.bundles.c.version))
        with self._write() as db:
            if db.execute(stmt).first() is not None:
                return True
            have = db.execute(sa.select(t.bundles.c.sha256)
                              .where(t.bundles.c.version == version)).scalar()
        if have != sha256:
            raise DuplicateError(f"bundle version {version!r} already exists with a "
                                 "different sha256")
        return False

    _bundle_cols = (t.bundles.c.version, t.bundles.c.name, t.bundles.c.filename,
                    t.bundles.c.sha256, t.bundles.c.bytes, t.bundles.c.created)

    def bundle(self, version: str) -> dict[str, Any] | None:
        with self._read() as db:
            row = db.execute(sa.select(*self._bundle_cols)
                             .where(t.bundles.c.version == version)).mappings().first()
        return None if row is None else dict(row)

    def bundles(self) -> list[dict[str, Any]]:
        with self._read() as db:
            rows = db.execute(sa.select(*self._bundle_cols)
                              .order_by(t.bundles.c.created)).mappings().all()
        return [dict(r) for r in rows]

    def set_desired(self, kind: str, target: str, version: str, now: float | None = None,
                    allow_downgrade: bool = False) -> None:
        """Set the desired bundle version of one device or a whole group; boards refuse a
        version older than the one they run unless ``allow_downgrade``."""
        if kind not in ("device", "group"):
            raise ValueError(f"kind must be 'device' or 'group', got {kind!r}")
        ins = self._insert(t.desired).values(kind=kind, target=target, version=version,
                                             updated=now or time.time(),
                                             allow_downgrade=int(allow_downgrade))
        stmt = ins.on_conflict_do_update(
            index_elements=["kind", "target"],
            set_={"version": ins.excluded.version, "updated": ins.excluded.updated,
                  "allow_downgrade": ins.excluded.allow_downgrade})
        with self._write() as db:
            if db.execute(sa.select(1).where(t.bundles.c.version == version)).first() is None:
                raise KeyError(f"unknown bundle version {version!r}")
            db.execute(stmt)

    def desired(self) -> list[dict[str, Any]]:
        d = t.desired.c
        with self._read() as db:
            rows = db.execute(sa.select(d.kind, d.target, d.version, d.updated,
                                        d.allow_downgrade)
                              .order_by(d.kind, d.target)).mappings().all()
        return [dict(r, allow_downgrade=bool(r["allow_downgrade"])) for r in rows]

    def desired_for(self, device: str) -> dict[str, Any] | None:
        """The bundle a device should run: its own setting wins over its group's."""
        v, d, b = t.devices.c, t.desired.c, t.bundles.c
        q = (sa.select(b.version, b.name, b.filename, b.sha256, b.bytes, d.kind,
                       d.allow_downgrade)
             .select_from(t.devices.join(t.desired, sa.or_(
                 sa.and_(d.kind == "device", d.target == v.name),
                 sa.and_(d.kind == "group", d.target == v.grp)))
                 .join(t.bundles, b.version == d.version))
             .where(v.name == device)
             .order_by(sa.case((d.kind == "device", 0), else_=1)).limit(1))
        with self._read() as db:
            row = db.execute(q).mappings().first()
        return None if row is None else dict(row, allow_downgrade=bool(row["allow_downgrade"]))

    # -- update reports ------------------------------------------------------------------

    def add_update_report(self, device: str, report: dict[str, Any],
                          now: float | None = None) -> bool:
        """Store a device's update outcome; False if this report id was already stored."""
        stmt = (self._insert(t.updates).values(
            device=device, id=str(report["id"]), ts=report.get("ts"),
            version=report.get("version"), outcome=report["outcome"],
            reason=report.get("reason"), body=json.dumps(report, sort_keys=True),
            received=now or time.time())
            .on_conflict_do_nothing(index_elements=["device", "id"])
            .returning(t.updates.c.id))
        with self._write() as db:
            return db.execute(stmt).first() is not None

    def update_reports(self, device: str, limit: int = 20) -> list[dict[str, Any]]:
        u = t.updates.c
        q = (sa.select(u.body, u.received).where(u.device == device)
             .order_by(u.received.desc(), u.id.desc()).limit(limit))
        with self._read() as db:
            rows: list[Any] = list(db.execute(q).all())
        return [dict(obj(loads(body)), received=received) for body, received in rows]


# The indexed columns hold typed copies of the record's fields (the body keeps the record
# as sent): a value of the wrong type is NULL there, the same on both backends.


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) \
        and -2**63 <= v < 2**63 else None


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _text(v: Any) -> str | None:
    return None if v is None else str(v)


def _device_dict(row: Any) -> dict[str, Any]:
    return {
        "name": row["name"],
        "group": row["grp"],
        "created": row["created"],
        "last_seen": row["last_seen"],
        "heartbeat": loads(row["heartbeat"]) if row["heartbeat"] else None,
    }
