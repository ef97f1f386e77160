"""Page sessions on the server (``Store`` inherits these): a session is valid while its
row exists and has not expired, so logging out (one row) and rotating the admin token
(every row) end it for every worker at once, whatever a copied cookie says."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager

import sqlalchemy as sa

from edgectl.collector.store import schema as t


class Sessions:
    """Session rows; ``Store`` provides ``_read``/``_write``. Ids arrive hashed."""

    def _read(self) -> AbstractContextManager[sa.Connection]:  # pragma: no cover
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[sa.Connection]:  # pragma: no cover
        raise NotImplementedError

    def add_session(self, id_hash: str, who: str, lifetime_s: float,
                    now: float | None = None) -> None:
        """A new session valid for ``lifetime_s``; expired rows are dropped on the way."""
        now = time.time() if now is None else now
        s = t.sessions.c
        with self._write() as db:
            db.execute(sa.delete(t.sessions).where(s.expires < now))
            db.execute(sa.insert(t.sessions).values(id_hash=id_hash, who=who, created=now,
                                                    expires=now + lifetime_s))

    def session_who(self, id_hash: str, now: float | None = None) -> str | None:
        """Who a live session belongs to; None if it ended, expired or never was."""
        now = time.time() if now is None else now
        s = t.sessions.c
        with self._read() as db:
            who = db.execute(sa.select(s.who).where(s.id_hash == id_hash,
                                                    s.expires >= now)).scalar()
        return None if who is None else str(who)

    def end_session(self, id_hash: str) -> bool:
        with self._write() as db:
            return bool(db.execute(sa.delete(t.sessions)
                                   .where(t.sessions.c.id_hash == id_hash)).rowcount)

    def end_all_sessions(self) -> int:
        """End every session (the admin token was rotated); how many were live."""
        with self._write() as db:
            return int(db.execute(sa.delete(t.sessions)).rowcount or 0)
