"""The delivery statements sent straight to the driver: the right columns, and driver errors
that reach the writer process as SQLAlchemy's classes, so it still tells a store that is down
from a bad delivery."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.exc import DataError

from localcog.postgres import scratch_database
from receiver.db import make_engine, migrate
from receiver.ingest_sql import (
    DELIVERY_COLUMNS,
    PREDICTION_COLUMNS,
    REPLAY_COLUMNS,
    UPDATED_COLUMNS,
    IngestSql,
    run,
)
from receiver.store import Delivery, Store
from receiver.tables import deliveries, predictions
from receiver.writer_process import Recorder
from tests.support.receiving import prediction

WAIT = 0.5  # seconds a statement may wait for a lock in these tests


def test_the_columns_are_the_tables_own() -> None:
    assert tuple(deliveries.c.keys()) == DELIVERY_COLUMNS + REPLAY_COLUMNS
    assert set(PREDICTION_COLUMNS) <= set(predictions.c.keys())
    assert set(UPDATED_COLUMNS) <= set(PREDICTION_COLUMNS) - {"id", "created_at"}


@pytest.fixture
def engine(database_url: str) -> Engine:
    made = make_engine(database_url, wait_seconds=WAIT)
    migrate(made)
    return made


def hold_write_lock(conn: Connection) -> None:
    """Take what the writer needs, in a transaction left open by the caller: on SQLite, the
    write lock every writing transaction takes first (BEGIN IMMEDIATE, see receiver.db)."""
    conn.begin()
    if conn.dialect.name == "postgresql":
        conn.execute(text("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE"))


def test_a_batch_is_recorded_exactly_once_in_one_transaction(engine: Engine) -> None:
    """Every statement of the batch, with what each must keep: a replay inside the batch and in
    a later one is a duplicate, a late event does not move a terminal prediction back, a row's
    created_at is its first delivery's, and a prediction that becomes terminal queues its file."""
    store = Store(engine, ["replicate.delivery"])
    output = ["https://replicate.delivery/x/out.npy"]
    first = [
        Delivery("msg_a", prediction("p1", "starting"), 1.0),
        Delivery("msg_b", prediction("p1", "succeeded", output=output), 2.0),
        Delivery("msg_a", prediction("p1", "starting"), 3.0),
        Delivery("msg_c", prediction("p2", "processing"), 4.0),
    ]
    second = [
        Delivery("msg_b", prediction("p1", "succeeded", output=output), 5.0),
        Delivery("msg_d", prediction("p1", "processing"), 6.0),
        Delivery("msg_e", prediction("p2", "succeeded"), 7.0),
    ]
    with engine.connect() as conn:
        assert store.record_batch(first, conn) == ["accepted", "accepted", "duplicate", "accepted"]
        assert store.record_batch(second, conn) == ["duplicate", "accepted", "accepted"]
        rows = conn.execute(
            select(predictions.c.id, predictions.c.status, predictions.c.terminal)
            .add_columns(predictions.c.created_at, predictions.c.updated_at)
            .order_by(predictions.c.id)
        ).all()
        kept = conn.execute(
            select(
                deliveries.c.webhook_id,
                deliveries.c.applied,
                deliveries.c.replays,
                deliveries.c.last_replay_at,
            ).order_by(deliveries.c.webhook_id)
        )
        stored_deliveries = [tuple(row) for row in kept]
    engine.dispose()
    assert [tuple(row) for row in rows] == [
        ("p1", "succeeded", True, 1.0, 2.0),  # the late processing event changed nothing
        ("p2", "succeeded", True, 4.0, 7.0),
    ]
    assert stored_deliveries == [
        ("msg_a", True, 1, 3.0),  # replayed once, inside its own batch
        ("msg_b", True, 1, 5.0),  # replayed once, in the next batch
        ("msg_c", True, 0, None),
        ("msg_d", False, 0, None),  # after p1 ended: kept, not applied
        ("msg_e", True, 0, None),
    ]
    assert [(f["url"], f["state"]) for f in store.prediction("p1")["files"]] == [
        (output[0], "queued")
    ]


def test_a_held_lock_fails_the_batch_once_not_each_delivery(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock timeout is the store failing, not a delivery: were it raised as the driver's own
    error, the writer would retry the batch one delivery at a time, each after its own wait."""
    batch = [
        (seq, Delivery(f"msg_{seq}", prediction(f"p{seq}", "starting"), 1.0)) for seq in (1, 2, 3)
    ]
    recorder = Recorder(Store(engine, []))
    with engine.connect() as holder:
        hold_write_lock(holder)
        started = time.monotonic()
        answers = recorder.record_deliveries(batch)
        elapsed = time.monotonic() - started
        holder.rollback()
    recorder.close()
    engine.dispose()
    assert [(seq, outcome) for seq, outcome, _ in answers] == [(1, None), (2, None), (3, None)]
    assert all(error for _, _, error in answers)
    assert elapsed < 2 * WAIT + 1  # one wait for the batch, not four
    assert "writing one at a time" not in caplog.text


def test_a_value_the_column_refuses_is_sqlalchemys_data_error() -> None:
    """PostgreSQL refuses an id over its column's 255 characters (SQLite keeps it)."""
    with scratch_database() as url:
        engine = make_engine(url)
        migrate(engine)
        row = ("msg_1", "x" * 300, "starting", "webhook", 1.0, True)
        sql = IngestSql.for_engine(engine).add_deliveries(1)
        with engine.connect() as conn, pytest.raises(DataError, match="value too long"):
            run(conn, sql, row)
        engine.dispose()


@pytest.mark.parametrize(
    ("metrics", "stored"),
    [
        ({"predict_time": 0.25}, 0.25),
        ({"predict_time": 3}, 3.0),
        ({"predict_time": "0.25"}, None),
        ({"predict_time": True}, None),
        ({"predict_time": -1.0}, None),
        ({"predict_time": 1e300}, None),
        ({}, None),
        ("not an object", None),
    ],
)
def test_predict_time_is_copied_out_of_the_body(
    engine: Engine, metrics: object, stored: float | None
) -> None:
    """The console lists it from this column; only a plain non-negative number is taken."""
    store = Store(engine, [])
    store.record_batch([Delivery("msg_a", prediction("p1", "succeeded", metrics=metrics), 1.0)])
    with engine.connect() as conn:
        column = conn.execute(select(predictions.c.predict_time)).scalar_one()
    engine.dispose()
    assert column == stored


def test_a_late_replay_never_moves_the_last_replay_time_back(engine: Engine) -> None:
    """Two writers may commit out of order: the count grows, the time keeps the latest."""
    store = Store(engine, [])
    body = prediction("p1", "processing")
    store.record_batch([Delivery("msg_a", body, 1.0), Delivery("msg_a", body, 9.0)])
    store.record_batch([Delivery("msg_b", body, 2.0)])
    replays = [Delivery("msg_b", body, 6.0), Delivery("msg_a", body, 5.0)]
    store.record_batch([*replays, Delivery("msg_b", body, 7.0)])  # two ids, out of order
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                deliveries.c.webhook_id, deliveries.c.replays, deliveries.c.last_replay_at
            ).order_by(deliveries.c.webhook_id)
        )
        counted = [tuple(row) for row in rows]
    engine.dispose()
    assert counted == [("msg_a", 2, 9.0), ("msg_b", 2, 7.0)]
