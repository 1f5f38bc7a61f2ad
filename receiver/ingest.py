"""Ingest: record each verified delivery exactly once, merged into its prediction's state.

`Ingest.record_batch` is the exactly-once step: the delivery row's primary key (the webhook-id)
decides whether a delivery is new, and the merged prediction state, the delivery and any
download jobs are committed in one transaction before the sender is acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson
from sqlalchemy import Connection, Engine

from receiver import rules
from receiver.file_queue import FileQueue
from receiver.tables import deliveries, dialect_insert, predictions

Outcome = Literal["accepted", "duplicate"]


@dataclass(frozen=True)
class Delivery:
    """One verified webhook (or reconciled API state) waiting to be recorded."""

    webhook_id: str
    body: dict[str, Any]
    received_at: float
    source: str = "webhook"
    raw: bytes | None = None  # the body's exact JSON bytes, when it came over HTTP

    def text(self) -> str:
        return self.raw.decode() if self.raw is not None else orjson.dumps(self.body).decode()

    @property
    def prediction_id(self) -> str:
        return str(self.body["id"])

    def delivery_row(self) -> dict[str, Any]:
        return {
            "webhook_id": self.webhook_id,
            "prediction_id": self.prediction_id,
            "status": self.body.get("status", ""),
            "source": self.source,
            "received_at": self.received_at,
        }


@dataclass
class PredictionChange:
    """What one batch does to one prediction: its stored state, then each delivery merged in."""

    prediction_id: str
    first_seen: float  # its first delivery in the batch: created_at, should the row be new
    last_seen: float  # its last delivery in the batch: updated_at, should the state change
    was_terminal: bool
    state: dict[str, Any] | None
    changed: bool = False
    # The delivery whose body is the state as is: its original bytes are stored, not re-encoded.
    origin: Delivery | None = None

    def take(self, delivery: Delivery) -> None:
        merged = rules.merge(self.state, delivery.body)
        self.last_seen = delivery.received_at
        if merged.source == "current":
            return
        self.changed = True
        self.state = merged.state
        self.origin = delivery if merged.source == "incoming" else None

    @property
    def becomes_terminal(self) -> bool:
        return self.state is not None and rules.is_terminal(self.state) and not self.was_terminal

    @property
    def output(self) -> object:
        return (self.state or {}).get("output")

    def row(self) -> dict[str, Any]:
        state = self.state or {}
        text = self.origin.text() if self.origin else orjson.dumps(state).decode()
        return {
            "id": self.prediction_id,
            "status": state.get("status", ""),
            "terminal": rules.is_terminal(state),
            "body": text,
            "created_at": self.first_seen,
            "updated_at": self.last_seen,
        }


class Ingest:
    def __init__(self, engine: Engine, queue: FileQueue) -> None:
        self.engine = engine
        self.queue = queue
        insert = dialect_insert(engine)
        self._add_deliveries = (
            insert(deliveries).on_conflict_do_nothing().returning(deliveries.c.webhook_id)
        )
        claim = insert(predictions)
        # Create-or-lock in one statement: a new prediction gets a placeholder row, an existing
        # one is locked (the no-op update) and its current state returned.
        self._claim_predictions = claim.on_conflict_do_update(
            index_elements=[predictions.c.id], set_={"id": claim.excluded.id}
        ).returning(predictions.c.id, predictions.c.body, predictions.c.terminal)
        # Written back as an upsert of rows that all exist: unlike an UPDATE executemany, it
        # goes out as one multi-row statement (RETURNING makes SQLAlchemy batch it).
        write = insert(predictions)
        self._write_predictions = write.on_conflict_do_update(
            index_elements=[predictions.c.id],
            set_={c: write.excluded[c] for c in ("status", "terminal", "body", "updated_at")},
        ).returning(predictions.c.id)

    def record(
        self, webhook_id: str, body: dict[str, Any], received_at: float, source: str = "webhook"
    ) -> Outcome:
        """Apply one verified delivery exactly once; returns whether it was new."""
        return self.record_batch([Delivery(webhook_id, body, received_at, source)])[0]

    def record_batch(self, batch: list[Delivery], conn: Connection | None = None) -> list[Outcome]:
        """Apply deliveries in arrival order, in one transaction (one fsync for all of them).

        `conn`: a connection the caller keeps open (the writer process does, to skip the pool's
        checkout ping and reset round trips); by default one is borrowed from the pool.

        Set-based, so the cost per delivery stays small: insert the deliveries (the primary key
        drops replays), make sure each prediction has a row, lock those rows in id order (no
        deadlocks between processes), merge in Python, write back, queue output files.
        """
        first: dict[str, int] = {}
        for i, d in enumerate(batch):
            first.setdefault(d.webhook_id, i)  # a replay inside the batch is a duplicate too
        fresh = [d for i, d in enumerate(batch) if first[d.webhook_id] == i]
        if conn is None:
            with self.engine.connect() as borrowed:
                return self.record_batch(batch, borrowed)
        with conn.begin():
            rows = [d.delivery_row() for d in fresh]
            added = set(conn.execute(self._add_deliveries, rows).scalars())
            applied = [d for d in fresh if d.webhook_id in added]
            if applied:
                self._apply(conn, applied)
        return [
            "accepted" if i == first[d.webhook_id] and d.webhook_id in added else "duplicate"
            for i, d in enumerate(batch)
        ]

    def _apply(self, conn: Connection, applied: list[Delivery]) -> None:
        """Claim each prediction's row, merge its deliveries in order, write what changed."""
        changes = self._claim(conn, applied)
        for d in applied:
            changes[d.prediction_id].take(d)
        changed = [c for c in changes.values() if c.changed]
        if changed:
            conn.execute(self._write_predictions, [c.row() for c in changed]).all()
        jobs = [
            job
            for c in changed
            if c.becomes_terminal
            for job in self.queue.jobs_for(c.prediction_id, c.output, c.last_seen)
        ]
        self.queue.enqueue(conn, jobs)

    def _claim(self, conn: Connection, applied: list[Delivery]) -> dict[str, PredictionChange]:
        """Create or lock each prediction's row, in id order: two processes never wait on each
        other in a cycle. Returns each prediction's change, not yet merged, in id order."""
        first_seen: dict[str, float] = {}
        for d in applied:
            first_seen.setdefault(d.prediction_id, d.received_at)
        ids = sorted(first_seen)
        placeholders = [
            {
                "id": pid,
                "status": "",
                "terminal": False,
                "body": "null",
                "created_at": first_seen[pid],
                "updated_at": first_seen[pid],
            }
            for pid in ids
        ]
        stored = {r.id: r for r in conn.execute(self._claim_predictions, placeholders)}
        return {
            pid: PredictionChange(
                prediction_id=pid,
                first_seen=first_seen[pid],
                last_seen=first_seen[pid],
                was_terminal=stored[pid].terminal,
                state=orjson.loads(stored[pid].body),
            )
            for pid in ids
        }
