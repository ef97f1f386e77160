"""Time-series indexes: decisions by (device, ts) and by ts (retention), update reports
by (device, received).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_decisions_device_ts", "decisions", ["device", "ts"])
    op.create_index("ix_decisions_ts", "decisions", ["ts"])
    op.create_index("ix_updates_device_received", "updates", ["device", "received"])


def downgrade() -> None:
    op.drop_index("ix_updates_device_received", "updates")
    op.drop_index("ix_decisions_ts", "decisions")
    op.drop_index("ix_decisions_device_ts", "decisions")
