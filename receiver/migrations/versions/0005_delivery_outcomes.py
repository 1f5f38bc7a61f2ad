"""What the console shows of each delivery and prediction without reading bodies.

`deliveries.applied`: whether a delivery was merged into its prediction (a late one, after the
end, is not); unknown (NULL) for rows stored before. `deliveries.replays` and `last_replay_at`:
the replays of a webhook-id, which still add no row. `predictions.predict_time`: Replicate's
`metrics.predict_time`, filled here from the bodies already stored, a few at a time (a body
can hold megabytes of vectors).

Revision ID: 0005
Revises: 0004
"""

import orjson
import sqlalchemy as sa
from alembic import op

from receiver.rules import predict_time

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BODIES_AT_ONCE = 20


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("applied", sa.Boolean))
    op.add_column(
        "deliveries", sa.Column("replays", sa.Integer, nullable=False, server_default="0")
    )
    op.add_column("deliveries", sa.Column("last_replay_at", sa.Double))
    op.add_column("predictions", sa.Column("predict_time", sa.Double))
    fill_predict_times(op.get_bind())


def fill_predict_times(conn: sa.Connection) -> None:
    """Page through the ended predictions by id (no cursor stays open across the updates)."""
    select = sa.text(
        "SELECT id, body FROM predictions WHERE terminal AND id > :after ORDER BY id LIMIT :n"
    )
    update = sa.text("UPDATE predictions SET predict_time = :seconds WHERE id = :id")
    after = ""
    while True:
        rows = conn.execute(select, {"after": after, "n": BODIES_AT_ONCE}).all()
        if not rows:
            return
        times = [{"id": pid, "seconds": predict_time(orjson.loads(body))} for pid, body in rows]
        known = [row for row in times if row["seconds"] is not None]
        if known:
            conn.execute(update, known)
        after = rows[-1][0]
