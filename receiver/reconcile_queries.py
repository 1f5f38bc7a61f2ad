"""The reconciler's queries: which open predictions have gone quiet, and which were tried.

The reconciler (`receiver.reconcile`) records what it fetches through ingest, like a delivery;
these two queries only pick its work and remember that a prediction was tried this interval.
"""

from __future__ import annotations

from sqlalchemy import Engine, select, update

from receiver.tables import predictions


class ReconcileQueries:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def stale(self, updated_before: float, created_after: float, limit: int) -> list[str]:
        """Open predictions silent since `updated_before` and not reconciled since then."""
        quiet = predictions.c.updated_at < updated_before
        not_tried = predictions.c.reconciled_at.is_(None) | (
            predictions.c.reconciled_at < updated_before
        )
        query = (
            select(predictions.c.id)
            .where(
                ~predictions.c.terminal, quiet, not_tried, predictions.c.created_at > created_after
            )
            .order_by(predictions.c.updated_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def mark_reconciled(self, prediction_id: str, now: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(predictions)
                .where(predictions.c.id == prediction_id)
                .values(reconciled_at=now)
            )
