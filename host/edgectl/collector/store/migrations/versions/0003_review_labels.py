"""Review labels: what a person decided a kept sample really shows (the fleet page's
review queue), one row per sample, exported as an image folder for training.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_labels",
        sa.Column("device", sa.Text, primary_key=True),
        sa.Column("sample_id", sa.Text, primary_key=True),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("labelled_by", sa.Text, nullable=False),
        sa.Column("labelled_at", sa.Float, nullable=False),
        sa.Column("model_label", sa.Text),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("review_labels")
