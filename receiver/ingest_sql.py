"""The statements every delivery runs, as SQL text handed straight to the driver.

Why not SQLAlchemy Core, as everywhere else in the store: these run for every webhook, in the
writer process, and Core's compile-and-execute machinery cost more CPU than the database did
(0.38 ms against 0.15 ms per one-delivery transaction on SQLite, measured here). At a steady
rate a delivery's answer waits for that CPU: with these statements the writer process spends
0.49 ms of CPU per delivery at 500/s instead of 0.63 ms (`make bench-receiver`'s load, read
from /proc). Both databases spell these statements alike (INSERT … ON CONFLICT … RETURNING);
only the placeholder differs. The column names are those of `receiver.tables`
(tests/receiver/test_ingest_sql.py checks them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

DELIVERY_COLUMNS = ("webhook_id", "prediction_id", "status", "source", "received_at", "applied")
# Written only for replays (a sender's retries): a count on the delivery's row.
REPLAY_COLUMNS = ("replays", "last_replay_at")
PREDICTION_COLUMNS = (
    "id",
    "status",
    "terminal",
    "body",
    "created_at",
    "updated_at",
    "predict_time",
)
# What a later delivery may change in an existing prediction row.
UPDATED_COLUMNS = ("status", "terminal", "body", "updated_at", "predict_time")


@dataclass(frozen=True)
class IngestSql:
    """SQL text for a batch of `rows` rows; `placeholder` is the driver's: `?` for sqlite3,
    `%s` for psycopg."""

    placeholder: str

    @classmethod
    def for_engine(cls, engine: Engine) -> IngestSql:
        return cls("%s" if engine.dialect.name == "postgresql" else "?")

    def add_deliveries(self, rows: int) -> str:
        """Insert deliveries; a webhook-id already stored is skipped, and not returned."""
        values = _insert("deliveries", DELIVERY_COLUMNS, rows, self.placeholder)
        return f"{values} ON CONFLICT DO NOTHING RETURNING webhook_id"

    def not_applied(self, rows: int) -> str:
        """Mark deliveries just added as not merged (their prediction had already ended)."""
        ids = ", ".join([self.placeholder] * rows)
        return f"UPDATE deliveries SET applied = {self.placeholder} WHERE webhook_id IN ({ids})"

    def count_replays(self) -> str:
        """Count replays of one stored webhook-id: how many, and when the latest came (two
        writers may commit out of order: the time never moves back). Parameters: the count,
        the time twice, the webhook-id."""
        p = self.placeholder
        later = f"last_replay_at IS NULL OR last_replay_at < {p}"
        latest = f"CASE WHEN {later} THEN {p} ELSE last_replay_at END"
        return (
            f"UPDATE deliveries SET replays = replays + {p}, last_replay_at = {latest}"
            f" WHERE webhook_id = {p}"
        )

    def claim_predictions(self, rows: int) -> str:
        """Create-or-lock in one statement: a new prediction gets the placeholder row given, an
        existing one is locked (the no-op update) and its current body returned."""
        values = _insert("predictions", PREDICTION_COLUMNS, rows, self.placeholder)
        locked = "ON CONFLICT (id) DO UPDATE SET id = excluded.id"
        return f"{values} {locked} RETURNING id, body, terminal"

    def write_predictions(self, rows: int) -> str:
        """Write merged bodies back to rows that all exist: one multi-row statement."""
        values = _insert("predictions", PREDICTION_COLUMNS, rows, self.placeholder)
        updates = ", ".join(f"{column} = excluded.{column}" for column in UPDATED_COLUMNS)
        return f"{values} ON CONFLICT (id) DO UPDATE SET {updates}"


def run(conn: Connection, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
    """Execute on the driver's own cursor, inside `conn`'s transaction; the rows it returns.
    A driver error is raised as SQLAlchemy's class for it, as `conn.execute` would raise it
    (the writer process tells a store that is down from a bad delivery by that class)."""
    return _on_cursor(conn, sql, params, many=False)


def run_many(conn: Connection, sql: str, rows: Sequence[Sequence[object]]) -> None:
    """Execute once per row, in order, as `run` does: one round trip for all of them where the
    driver pipelines (psycopg 3 does)."""
    _on_cursor(conn, sql, rows, many=True)


def _on_cursor(conn: Connection, sql: str, params: Any, many: bool) -> list[tuple[Any, ...]]:
    dbapi = conn.dialect.loaded_dbapi
    driver_connection = conn.connection.dbapi_connection
    cursor = None
    try:
        cursor = conn.connection.cursor()
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
        if cursor.description is None:  # a statement without RETURNING
            return []
        return [tuple(row) for row in cursor.fetchall()]
    except dbapi.Error as exc:
        # A lost connection is invalidated, as SQLAlchemy does for its own statements: the
        # rollback that follows then skips it instead of replacing this error with its own.
        gone = conn.dialect.is_disconnect(exc, driver_connection, cursor)
        if gone:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            sql,
            params,
            exc,
            dbapi.Error,
            connection_invalidated=gone,
            dialect=conn.dialect,
        ) from exc
    finally:
        if cursor is not None:
            cursor.close()


def _insert(table: str, columns: tuple[str, ...], rows: int, placeholder: str) -> str:
    """`INSERT INTO table (columns) VALUES (…), (…)` with `rows` rows of placeholders."""
    row = "(" + ", ".join([placeholder] * len(columns)) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row] * rows)}"
