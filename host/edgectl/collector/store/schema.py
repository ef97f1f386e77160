"""The collector's tables (SQLAlchemy Core): the one schema both backends share.

Times are Unix seconds (float), bodies are the JSON the device sent (text), so SQLite and
PostgreSQL hold the same values. ``decisions`` is keyed by ``(device, id)`` (the
idempotence key) and indexed by ``(device, ts)`` and ``ts`` for time-range reads and
retention. Changing a table here needs a migration in ``migrations/versions``.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

devices = sa.Table(
    "devices", metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("grp", sa.Text),
    sa.Column("token_hash", sa.Text, nullable=False, unique=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float),
    sa.Column("heartbeat", sa.Text),
)

decisions = sa.Table(
    "decisions", metadata,
    sa.Column("device", sa.Text, primary_key=True),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger),
    sa.Column("ts", sa.Float),
    sa.Column("label", sa.Text),
    sa.Column("decision", sa.Text),
    sa.Column("model_version", sa.Text),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("received", sa.Float, nullable=False),
    sa.Index("ix_decisions_device_ts", "device", "ts"),
    sa.Index("ix_decisions_ts", "ts"),
    sqlite_with_rowid=False,
)

samples = sa.Table(
    "samples", metadata,
    sa.Column("device", sa.Text, primary_key=True),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("content_type", sa.Text, nullable=False),
    sa.Column("received", sa.Float, nullable=False),
    sqlite_with_rowid=False,
)

bundles = sa.Table(
    "bundles", metadata,
    sa.Column("version", sa.Text, primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("manifest", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)

desired = sa.Table(
    "desired", metadata,
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("target", sa.Text, primary_key=True),
    sa.Column("version", sa.Text, sa.ForeignKey("bundles.version"), nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
    sa.Column("allow_downgrade", sa.Integer, nullable=False, server_default="0"),
    sa.CheckConstraint("kind IN ('device', 'group')", name="ck_desired_kind"),
)

updates = sa.Table(
    "updates", metadata,
    sa.Column("device", sa.Text, primary_key=True),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("ts", sa.Float),
    sa.Column("version", sa.Text),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("received", sa.Float, nullable=False),
    sa.Index("ix_updates_device_received", "device", "received"),
)

review_labels = sa.Table(
    "review_labels", metadata,
    sa.Column("device", sa.Text, primary_key=True),
    sa.Column("sample_id", sa.Text, primary_key=True),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("labelled_by", sa.Text, nullable=False),
    sa.Column("labelled_at", sa.Float, nullable=False),
    sa.Column("model_label", sa.Text),
    sqlite_with_rowid=False,
)

sessions = sa.Table(
    "sessions", metadata,
    sa.Column("id_hash", sa.Text, primary_key=True),
    sa.Column("who", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
)
