"""What the console's pages show, read from the store: predictions with their counts, files
by state."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from receiver.tables import deliveries, files, predictions


def prediction_rows(
    engine: Engine,
    status: str | None,
    search: str | None,
    limit: int,
    before: tuple[float, str] | None,
) -> list[dict[str, Any]]:
    """Newest first, as the read API pages them, with each one's deliveries and files counted;
    `search`: an id or the start of one."""
    delivered = (
        select(func.count()).where(deliveries.c.prediction_id == predictions.c.id).scalar_subquery()
    )
    stored = select(func.count()).where(files.c.prediction_id == predictions.c.id).scalar_subquery()
    query = select(
        predictions.c.id,
        predictions.c.status,
        predictions.c.terminal,
        predictions.c.created_at,
        predictions.c.updated_at,
        predictions.c.predict_time,
        delivered.label("deliveries"),
        stored.label("files"),
    )
    if status:
        query = query.where(predictions.c.status == status)
    if search:
        query = query.where(predictions.c.id.startswith(search, autoescape=True))
    if before:
        created = before[0]
        pid = before[1]
        query = query.where(
            (predictions.c.created_at < created)
            | ((predictions.c.created_at == created) & (predictions.c.id < pid))
        )
    query = query.order_by(predictions.c.created_at.desc(), predictions.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        return [row._asdict() for row in conn.execute(query)]


def file_rows(engine: Engine, state: str, limit: int) -> list[dict[str, Any]]:
    """Files in one state (queued, running, dead, ...), oldest prediction first."""
    query = (
        select(
            files.c.prediction_id,
            files.c.n,
            files.c.url,
            files.c.state,
            files.c.attempts,
            files.c.last_error,
        )
        .where(files.c.state == state)
        .order_by(files.c.prediction_id, files.c.n)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [row._asdict() for row in conn.execute(query)]


def files_by_state(engine: Engine, states: tuple[str, ...]) -> dict[str, int]:
    """How many files are in each of `states` (the done ones, most of them, are not counted)."""
    query = (
        select(files.c.state, func.count()).where(files.c.state.in_(states)).group_by(files.c.state)
    )
    with engine.connect() as conn:
        return {state: count for state, count in conn.execute(query)}
