"""What the console shows of each delivery and prediction without reading bodies.

`deliveries.applied`: whether a delivery was merged into its prediction (a late one, after the
end, is not); unknown (NULL) for rows stored before. `deliveries.replays` and `last_replay_at`:
the replays of a webhook-id, which still add no row. `predictions.predict_time`: Replicate's
`metrics.predict_time`, from ingest on. Stored bodies are not read to fill it: on a large
store that would keep the receiver from starting for as long as it takes (the console shows
those predictions' times as the receiver saw them).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("applied", sa.Boolean))
    op.add_column(
        "deliveries", sa.Column("replays", sa.Integer, nullable=False, server_default="0")
    )
    op.add_column("deliveries", sa.Column("last_replay_at", sa.Double))
    op.add_column("predictions", sa.Column("predict_time", sa.Double))
