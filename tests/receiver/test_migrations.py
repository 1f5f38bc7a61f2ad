"""The migrations build exactly the tables the code declares (receiver/tables.py), on both
databases: a column added to one and not the other would fail only on a user's store."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from receiver.db import make_engine, migrate
from receiver.tables import metadata


def test_migrated_schema_equals_the_declared_tables(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    ignored = {"alembic_version"}
    assert [d for d in differences if not (d[0] == "remove_table" and d[1].name in ignored)] == []


def test_a_store_with_a_running_job_keeps_it_through_0004(database_url: str) -> None:
    """The prediction a chunk already follows is never adopted by another after the upgrade,
    and an upload in progress is not swept at once."""
    engine = make_engine(database_url)
    migrate(engine, "0003")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, deployment, normalize, state, texts, chunks, created_at)"
                " VALUES ('job_a', 'o/n', true, 'running', 1, 1, 10),"
                " ('job_b', 'o/n', true, 'uploading', 0, 0, 20)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO job_chunks (job_id, n, first, count, input, digest, state, attempts,"
                " next_attempt_at, prediction_id) VALUES"
                " ('job_a', 0, 0, 1, '{}', 'd', 'running', 2, 0, 'p1')"
            )
        )
    migrate(engine)
    with engine.connect() as conn:
        tied = conn.execute(text("SELECT prediction_id, job_id, n, attempt FROM chunk_predictions"))
        assert [tuple(row) for row in tied] == [("p1", "job_a", 0, 2)]
        updated = conn.execute(text("SELECT id, updated_at FROM jobs ORDER BY id"))
        assert [tuple(row) for row in updated] == [("job_a", 10.0), ("job_b", 20.0)]
    engine.dispose()


def test_0005_keeps_stored_rows_and_adds_nothing_to_them(database_url: str) -> None:
    """A delivery stored before says nothing about being applied (that was not recorded) and
    counts no replays; a prediction's predict_time stays unknown (bodies are not read)."""
    engine = make_engine(database_url)
    migrate(engine, "0004")
    body = '{"id": "p_done", "status": "succeeded", "metrics": {"predict_time": 0.5}}'
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO predictions (id, status, terminal, body, created_at, updated_at)"
                " VALUES ('p_done', 'succeeded', true, :body, 1, 2)"
            ),
            {"body": body},
        )
        conn.execute(
            text(
                "INSERT INTO deliveries (webhook_id, prediction_id, status, source, received_at)"
                " VALUES ('msg_a', 'p_done', 'succeeded', 'webhook', 1)"
            )
        )
    migrate(engine)
    with engine.connect() as conn:
        kept = conn.execute(text("SELECT body, predict_time FROM predictions"))
        assert [tuple(row) for row in kept] == [(body, None)]
        delivery = conn.execute(text("SELECT applied, replays, last_replay_at FROM deliveries"))
        assert [tuple(row) for row in delivery] == [(None, 0, None)]
    engine.dispose()
