"""The reads behind the fleet pages, and the review labels (``Store`` inherits these).

Every query here is bounded: by an index range (decisions by ``(device, ts)`` or ``ts``),
by a ``LIMIT``, or by the number of devices; none scans the decisions table, so a page
costs the same with a year of decisions as with a day. Fields that live only in a
record's body (its latency, its score) are read with the backend's own JSON function
(SQLite ``json_extract``, PostgreSQL ``jsonb_extract_path_text``) as text and converted
here, so a record with an odd value shows as missing rather than failing the page.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from edgectl.collector.store import schema as t
from edgectl.collector.values import loads, number, obj


def _truthy(v: Any) -> bool:
    return v in (1, True, "1", "true", "True")


class Views:
    """Read queries for pages and metrics; ``Store`` provides ``_read``/``_write``."""

    sqlite: bool
    _insert: Any

    def _read(self) -> AbstractContextManager[sa.Connection]:  # pragma: no cover
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[sa.Connection]:  # pragma: no cover
        raise NotImplementedError

    def _json_field(self, *path: str) -> Any:
        """The text (SQLite: the value) at ``path`` in a decision's body."""
        body = t.decisions.c.body
        if self.sqlite:
            return sa.func.json_extract(body, "$." + ".".join(path))
        return sa.func.jsonb_extract_path_text(sa.cast(body, postgresql.JSONB), *path)

    # -- decisions over time -------------------------------------------------------------

    def recent_counts(self, since_ts: float) -> dict[str, dict[str, int]]:
        """Per device, decisions per kind with ``ts >= since_ts`` (an index range)."""
        d = t.decisions.c
        q = (sa.select(d.device, d.decision, sa.func.count().label("n"))
             .where(d.ts >= since_ts).group_by(d.device, d.decision))
        out: dict[str, dict[str, int]] = {}
        with self._read() as db:
            rows: list[Any] = list(db.execute(q).all())
        for dev, kind, n in rows:
            out.setdefault(dev, {})[str(kind)] = int(n)
        return out

    def decision_points(self, device: str, since_ts: float,
                        limit: int = 200_000) -> list[tuple[float, str, float | None, bool]]:
        """``(ts, decision, total latency ms, deadline missed)`` of one device's decisions
        since ``since_ts``, oldest first (the device page's charts)."""
        d = t.decisions.c
        q = (sa.select(d.ts, d.decision, self._json_field("latency_ms", "total"),
                       self._json_field("deadline_missed"))
             .where(d.device == device, d.ts >= since_ts).order_by(d.ts).limit(limit))
        with self._read() as db:
            rows: list[Any] = list(db.execute(q).all())
        return [(float(ts), str(kind), number(lat, text=True), _truthy(miss))
                for ts, kind, lat, miss in rows]

    def latest_decisions(self, device: str, limit: int = 50) -> list[dict[str, Any]]:
        """One device's newest decisions (by their own time), newest first."""
        d = t.decisions.c
        q = (sa.select(d.body).where(d.device == device)
             .order_by(d.ts.desc().nulls_last(), d.id).limit(limit))
        with self._read() as db:
            bodies: list[Any] = list(db.execute(q).scalars())
        return [loads(b) for b in bodies]

    # -- samples and review labels -------------------------------------------------------

    def sample_rows(self, device: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """The newest kept samples (optionally of one device) with the decision they
        belong to (model label, decision, score) and their review label, newest first."""
        s, d, r = t.samples.c, t.decisions.c, t.review_labels.c
        q = (sa.select(s.device, s.id, s.path, s.content_type, s.received, d.label,
                       d.decision, self._json_field("score").label("score"),
                       r.label.label("review"), r.labelled_by, r.labelled_at)
             .select_from(t.samples
                          .outerjoin(t.decisions, sa.and_(d.device == s.device, d.id == s.id))
                          .outerjoin(t.review_labels,
                                     sa.and_(r.device == s.device, r.sample_id == s.id)))
             .order_by(s.received.desc(), s.device, s.id).limit(limit))
        if device is not None:
            q = q.where(s.device == device)
        with self._read() as db:
            rows = db.execute(q).mappings().all()
        return [{"device": m["device"], "id": m["id"], "path": m["path"],
                 "content_type": m["content_type"], "received": m["received"],
                 "label": m["label"], "decision": m["decision"],
                 "score": number(m["score"], text=True),
                 "review": m["review"], "labelled_by": m["labelled_by"],
                 "labelled_at": m["labelled_at"]} for m in rows]

    def sample(self, device: str, sample_id: str) -> dict[str, Any] | None:
        s = t.samples.c
        with self._read() as db:
            row = db.execute(sa.select(s.device, s.id, s.path, s.content_type)
                             .where(s.device == device, s.id == sample_id)).mappings().first()
        return None if row is None else dict(row)

    def set_review_label(self, device: str, sample_id: str, label: str, by: str,
                         now: float | None = None) -> bool:
        """Record (or change) what a person says sample ``sample_id`` shows; False if
        there is no such sample."""
        s, d = t.samples.c, t.decisions.c
        with self._write() as db:
            if db.execute(sa.select(1).where(s.device == device,
                                             s.id == sample_id)).first() is None:
                return False
            model_label = db.execute(sa.select(d.label).where(
                d.device == device, d.id == sample_id)).scalar()
            ins = self._insert(t.review_labels).values(
                device=device, sample_id=sample_id, label=label, labelled_by=by,
                labelled_at=now or time.time(), model_label=model_label)
            db.execute(ins.on_conflict_do_update(
                index_elements=["device", "sample_id"],
                set_={"label": ins.excluded.label, "labelled_by": ins.excluded.labelled_by,
                      "labelled_at": ins.excluded.labelled_at}))
        return True

    def review_labels(self) -> Iterator[dict[str, Any]]:
        """Every review label with its sample's file (the export), oldest first."""
        r, s = t.review_labels.c, t.samples.c
        q = (sa.select(r.device, r.sample_id, r.label, r.model_label, r.labelled_at, s.path)
             .select_from(t.review_labels.join(
                 t.samples, sa.and_(s.device == r.device, s.id == r.sample_id)))
             .order_by(r.labelled_at, r.device, r.sample_id))
        with self._read() as db:
            rows = db.execute(q).mappings().all()
        return iter([dict(m) for m in rows])

    def review_label_count(self) -> int:
        with self._read() as db:
            return int(db.execute(sa.select(sa.func.count())
                                  .select_from(t.review_labels)).scalar_one())

    def last_update_reports(self) -> dict[str, dict[str, Any]]:
        """Each device's newest update report (one query for the whole fleet)."""
        u = t.updates.c
        newest = (sa.select(u.device, sa.func.max(u.received).label("received"))
                  .group_by(u.device).subquery())
        q = (sa.select(u.device, u.body, u.received)
             .join(newest, sa.and_(u.device == newest.c.device,
                                   u.received == newest.c.received))
             .order_by(u.device, u.id.desc()))
        out: dict[str, dict[str, Any]] = {}
        with self._read() as db:
            rows: list[Any] = list(db.execute(q).all())
        for dev, body, received in rows:
            out.setdefault(dev, dict(obj(loads(body)), received=received))
        return out

    def bundle_manifests(self) -> list[dict[str, Any]]:
        """Every bundle with its manifest, newest first (the models page)."""
        b = t.bundles.c
        with self._read() as db:
            rows = db.execute(sa.select(b.version, b.name, b.filename, b.sha256, b.bytes,
                                        b.created, b.manifest)
                              .order_by(b.created.desc())).mappings().all()
        return [dict(m, manifest=obj(loads(m["manifest"]))) for m in rows]
