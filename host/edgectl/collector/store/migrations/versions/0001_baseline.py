"""Baseline: the collector's schema as the SQLite-only store created it.

A database made before migrations existed is stamped at this revision (not re-created).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("grp", sa.Text),
        sa.Column("token_hash", sa.Text, nullable=False, unique=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float),
        sa.Column("heartbeat", sa.Text),
    )
    op.create_table(
        "decisions",
        sa.Column("device", sa.Text, primary_key=True),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger),
        sa.Column("ts", sa.Float),
        sa.Column("label", sa.Text),
        sa.Column("decision", sa.Text),
        sa.Column("model_version", sa.Text),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("received", sa.Float, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "samples",
        sa.Column("device", sa.Text, primary_key=True),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("content_type", sa.Text, nullable=False),
        sa.Column("received", sa.Float, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "bundles",
        sa.Column("version", sa.Text, primary_key=True),
        sa.Column("name", sa.Text),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("manifest", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_table(
        "desired",
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("target", sa.Text, primary_key=True),
        sa.Column("version", sa.Text, sa.ForeignKey("bundles.version"), nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.Column("allow_downgrade", sa.Integer, nullable=False, server_default="0"),
        sa.CheckConstraint("kind IN ('device', 'group')", name="ck_desired_kind"),
    )
    op.create_table(
        "updates",
        sa.Column("device", sa.Text, primary_key=True),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("ts", sa.Float),
        sa.Column("version", sa.Text),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("received", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for name in ("updates", "desired", "bundles", "samples", "decisions", "devices"):
        op.drop_table(name)
