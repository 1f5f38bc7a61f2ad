"""What the read API shows: a prediction with its deliveries and files, a page of predictions,
one stored file. Read-only: everything here is written by ingest and the download worker."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine, select, text

from receiver.tables import deliveries, files, predictions


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


class Reads:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def prediction(self, prediction_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(predictions).where(predictions.c.id == prediction_id)).first()
            if row is None:
                return None
            history = conn.execute(
                select(
                    deliveries.c.webhook_id,
                    deliveries.c.status,
                    deliveries.c.source,
                    deliveries.c.received_at,
                    deliveries.c.applied,
                    deliveries.c.replays,
                    deliveries.c.last_replay_at,
                )
                .where(deliveries.c.prediction_id == prediction_id)
                .order_by(deliveries.c.received_at, deliveries.c.webhook_id)
            ).all()
            stored = conn.execute(
                select(files).where(files.c.prediction_id == prediction_id).order_by(files.c.n)
            ).all()
        return {
            **orjson.loads(row.body),
            "deliveries": [_delivery_view(r._asdict()) for r in history],
            "files": [_file_view(f._asdict()) for f in stored],
        }

    def predictions(
        self, status: str | None, limit: int, before: tuple[float, str] | None
    ) -> list[dict[str, Any]]:
        """Newest first; `before` is the (created_at, id) of the last item of the previous page."""
        query = select(
            predictions.c.id,
            predictions.c.status,
            predictions.c.created_at,
            predictions.c.updated_at,
        )
        if status:
            query = query.where(predictions.c.status == status)
        if before:
            created = before[0]
            pid = before[1]
            query = query.where(
                (predictions.c.created_at < created)
                | ((predictions.c.created_at == created) & (predictions.c.id < pid))
            )
        newest = (predictions.c.created_at.desc(), predictions.c.id.desc())
        query = query.order_by(*newest).limit(limit)
        with self.engine.connect() as conn:
            return [r._asdict() for r in conn.execute(query)]

    def file(self, prediction_id: str, n: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(files).where(files.c.prediction_id == prediction_id, files.c.n == n)
            ).first()
        return row._asdict() if row else None

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))


def _delivery_view(row: dict[str, Any]) -> dict[str, Any]:
    replayed = row["last_replay_at"]
    return {
        **row,
        "received_at": iso(row["received_at"]),
        "last_replay_at": iso(replayed) if replayed is not None else None,
    }


def _file_view(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("n", "url", "state", "attempts", "sha256", "size", "content_type", "last_error")
    view = {k: row[k] for k in keys}
    view["local"] = row["path"]
    return view
