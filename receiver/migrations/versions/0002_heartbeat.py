"""Heartbeat: one row that /healthz rewrites through the writer process, to prove a commit
still reaches the disk (a read alone said ok on a full SQLite disk).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    heartbeat = op.create_table(
        "heartbeat",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("beat_at", sa.Double, nullable=False),
    )
    op.bulk_insert(heartbeat, [{"id": 1, "beat_at": 0.0}])
