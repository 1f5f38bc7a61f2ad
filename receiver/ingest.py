"""Ingest: record each verified delivery exactly once, merged into its prediction's body.

`Ingest.record_batch` is the exactly-once step: the delivery row's primary key (the webhook-id)
decides whether a delivery is new, and the merged prediction body, the delivery and any
download jobs are committed in one transaction before the sender is acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from sqlalchemy import Connection, Engine

from receiver import rules
from receiver.file_queue import FileQueue
from receiver.ingest_sql import IngestSql, run, run_many

Outcome = Literal["accepted", "duplicate"]
# Deliveries in one transaction at most: each is a row of 6 or 7 parameters in one statement,
# far below SQLite's 32 766 and PostgreSQL's 65 535 parameters a statement.
MAX_BATCH = 256


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

    def delivery_row(self) -> tuple[str, str, str, str, float, bool]:
        """The values of its `deliveries` row, in `DELIVERY_COLUMNS` order: applied until the
        merge finds that its prediction had already ended."""
        status = self.body.get("status", "")
        return (self.webhook_id, self.prediction_id, status, self.source, self.received_at, True)


@dataclass
class PredictionChange:
    """What one batch does to one prediction: its stored body, then each delivery merged in."""

    prediction_id: str
    first_seen: float  # its first delivery in the batch: created_at, should the row be new
    last_seen: float  # its last delivery in the batch: updated_at, should the body change
    was_terminal: bool
    body: dict[str, Any] | None  # as stored (`predictions.body`), then as merged so far
    changed: bool = False
    # The delivery whose body is kept as is: its original bytes are stored, not re-encoded.
    origin: Delivery | None = None

    def take(self, delivery: Delivery) -> bool:
        """Merge one delivery in; whether it was applied (not after the prediction ended)."""
        merged = rules.merge(self.body, delivery.body)
        self.last_seen = delivery.received_at
        if merged.source == "current":
            return False
        self.changed = True
        self.body = merged.body
        self.origin = delivery if merged.source == "incoming" else None
        return True

    @property
    def becomes_terminal(self) -> bool:
        return self.body is not None and rules.is_terminal(self.body) and not self.was_terminal

    @property
    def output(self) -> object:
        return (self.body or {}).get("output")

    def row(self) -> tuple[str, str, bool, str, float, float, float | None]:
        """The values of its `predictions` row, in `PREDICTION_COLUMNS` order."""
        body = self.body or {}
        text = self.origin.text() if self.origin else orjson.dumps(body).decode()
        status = body.get("status", "")
        terminal = rules.is_terminal(body)
        seconds = rules.predict_time(body)
        return (
            self.prediction_id,
            status,
            terminal,
            text,
            self.first_seen,
            self.last_seen,
            seconds,
        )


class Ingest:
    def __init__(self, engine: Engine, queue: FileQueue) -> None:
        self.engine = engine
        self.queue = queue
        self.sql = IngestSql.for_engine(engine)

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
        if not batch:
            return []
        if len(batch) > MAX_BATCH:
            raise ValueError(f"{len(batch)} deliveries in one batch; at most {MAX_BATCH}")
        first: dict[str, int] = {}
        for i, d in enumerate(batch):
            first.setdefault(d.webhook_id, i)  # a replay inside the batch is a duplicate too
        fresh = [d for i, d in enumerate(batch) if first[d.webhook_id] == i]
        if conn is None:
            with self.engine.connect() as borrowed:
                return self.record_batch(batch, borrowed)
        with conn.begin():
            added = self._add_deliveries(conn, fresh)
            new = [d for d in fresh if d.webhook_id in added]
            if new:
                self._apply(conn, new)
            outcomes: list[Outcome] = [
                "accepted" if i == first[d.webhook_id] and d.webhook_id in added else "duplicate"
                for i, d in enumerate(batch)
            ]
            replays = [
                d for d, outcome in zip(batch, outcomes, strict=True) if outcome != "accepted"
            ]
            if replays:
                self._count_replays(conn, replays)
        return outcomes

    def _apply(self, conn: Connection, new: list[Delivery]) -> None:
        """Claim each prediction's row, merge its deliveries in order, write what changed, and
        mark the deliveries that came after their prediction's end."""
        changes = self._claim(conn, new)
        late = [d.webhook_id for d in new if not changes[d.prediction_id].take(d)]
        if late:
            run(conn, self.sql.not_applied(len(late)), (False, *late))
        changed = [c for c in changes.values() if c.changed]
        if changed:
            sql = self.sql.write_predictions(len(changed))
            run(conn, sql, _flat(c.row() for c in changed))
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
        new_rows = [(pid, "", False, "null", first_seen[pid], first_seen[pid], None) for pid in ids]
        sql = self.sql.claim_predictions(len(ids))
        changes: dict[str, PredictionChange] = {}
        for pid, body, terminal in run(conn, sql, _flat(new_rows)):
            changes[pid] = PredictionChange(
                prediction_id=pid,
                first_seen=first_seen[pid],
                last_seen=first_seen[pid],
                was_terminal=bool(terminal),  # SQLite returns 0 or 1
                body=orjson.loads(body),
            )
        return {pid: changes[pid] for pid in ids}  # RETURNING promises no order

    def _count_replays(self, conn: Connection, replays: list[Delivery]) -> None:
        """Count each replayed webhook-id on its row, last of all and in webhook-id order: every
        row it touches is already stored, so no other writer waits on it in another order."""
        count: dict[str, int] = {}
        last: dict[str, float] = {}
        for d in replays:
            count[d.webhook_id] = count.get(d.webhook_id, 0) + 1
            last[d.webhook_id] = max(last.get(d.webhook_id, d.received_at), d.received_at)
        rows = [(count[wid], last[wid], last[wid], wid) for wid in sorted(count)]
        run_many(conn, self.sql.count_replays(), rows)

    def _add_deliveries(self, conn: Connection, fresh: list[Delivery]) -> set[str]:
        """Insert the deliveries; the webhook-ids that were new (the others are replays). In
        webhook-id order, as rows are claimed: two writers inserting the same ids wait on each
        other in one order, never in a cycle."""
        sql = self.sql.add_deliveries(len(fresh))
        ordered = sorted(fresh, key=lambda d: d.webhook_id)
        rows = run(conn, sql, _flat(d.delivery_row() for d in ordered))
        return {webhook_id for (webhook_id,) in rows}


def _flat(rows: Iterable[tuple[object, ...]]) -> tuple[object, ...]:
    """One statement's parameters: its rows' values, one after the other."""
    return tuple(value for row in rows for value in row)
