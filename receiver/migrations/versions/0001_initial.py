"""Initial schema: predictions, deliveries, files.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("terminal", sa.Boolean, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("reconciled_at", sa.Double),
    )
    op.create_index("predictions_open", "predictions", ["terminal", "updated_at"])
    op.create_index("predictions_recent", "predictions", ["created_at", "id"])
    op.create_table(
        "deliveries",
        sa.Column("webhook_id", sa.String(255), primary_key=True),
        sa.Column("prediction_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("received_at", sa.Double, nullable=False),
    )
    op.create_index("ix_deliveries_prediction_id", "deliveries", ["prediction_id"])
    op.create_table(
        "files",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("prediction_id", sa.String(255), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Double, nullable=False),
        sa.Column("lease_until", sa.Double),
        sa.Column("last_error", sa.Text),
        sa.Column("path", sa.Text),
        sa.Column("sha256", sa.String(64)),
        sa.Column("size", sa.BigInteger),
        sa.Column("content_type", sa.String(255)),
        sa.UniqueConstraint("prediction_id", "n", name="files_prediction_n"),
    )
    op.create_index("files_ready", "files", ["state", "next_attempt_at"])
