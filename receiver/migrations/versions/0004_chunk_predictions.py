"""Every prediction a job's chunk has followed, on any attempt; an upload's last progress.

A chunk whose create got no clear answer is found again on Replicate by its input; a
prediction an earlier attempt followed (failed, or its file lost) has that input too and must
not be taken again. `jobs.updated_at` tells a live upload from one whose process died. Chunks
are no longer looked up by digest (recovery reads Replicate's list, not our deliveries): its
index goes. Both new columns are filled from what a running receiver already holds.
`job_chunks.lost_claims` bounds how often a chunk is claimed without a prediction coming of it.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chunk_predictions",
        sa.Column("prediction_id", sa.String(255), primary_key=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
    )
    op.create_index("chunk_predictions_chunk", "chunk_predictions", ["job_id", "n"])
    op.execute(
        "INSERT INTO chunk_predictions (prediction_id, job_id, n, attempt)"
        " SELECT prediction_id, job_id, n, attempts FROM job_chunks"
        " WHERE prediction_id IS NOT NULL"
    )
    op.add_column("jobs", sa.Column("updated_at", sa.Double))
    op.execute("UPDATE jobs SET updated_at = created_at")
    op.drop_index("job_chunks_digest", "job_chunks")
    op.add_column(
        "job_chunks", sa.Column("lost_claims", sa.Integer, nullable=False, server_default="0")
    )
