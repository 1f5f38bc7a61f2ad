"""Corpus jobs: jobs, their chunks, and the shared rate limit on prediction creation.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("deployment", sa.String(255), nullable=False),
        sa.Column("normalize", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("texts", sa.Integer, nullable=False),
        sa.Column("chunks", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("finished_at", sa.Double),
    )
    op.create_index("jobs_recent", "jobs", ["created_at", "id"])
    op.create_table(
        "job_chunks",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("n", sa.Integer, primary_key=True),
        sa.Column("first", sa.Integer, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("input", sa.Text, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Double, nullable=False),
        sa.Column("lease_until", sa.Double),
        sa.Column("claimed_at", sa.Double),
        sa.Column("prediction_id", sa.String(255)),
        sa.Column("error", sa.Text),
        sa.Column("finished_at", sa.Double),
    )
    op.create_index("job_chunks_ready", "job_chunks", ["state", "next_attempt_at"])
    op.create_index("job_chunks_prediction", "job_chunks", ["prediction_id"])
    op.create_index("job_chunks_digest", "job_chunks", ["digest"])
    op.create_table(
        "rate_limits",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("tokens", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("blocked_until", sa.Double, nullable=False),
    )
