"""Everything the receiver keeps, behind one small API, on SQLite or PostgreSQL.

`record_batch` is the exactly-once step: the delivery row's primary key (the webhook-id) decides
whether a delivery is new, and the merged prediction state, the delivery and any download
jobs are committed in one transaction before the sender is acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from sqlalchemy import Connection, Engine, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from receiver import rules
from receiver.tables import deliveries, files, predictions

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


@dataclass(frozen=True)
class Job:
    id: int
    prediction_id: str
    n: int
    url: str
    attempts: int


class Store:
    def __init__(self, engine: Engine, download_hosts: list[str]) -> None:
        self.engine = engine
        self.download_hosts = download_hosts
        insert = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert
        # Built once: both dialects spell ON CONFLICT the same way.
        self._add_deliveries = (
            insert(deliveries).on_conflict_do_nothing().returning(deliveries.c.webhook_id)
        )
        claim = insert(predictions)
        # Create-or-lock in one statement: a new prediction gets a placeholder row, an existing
        # one is locked (the no-op update) and its current state returned.
        self._claim_predictions = claim.on_conflict_do_update(
            index_elements=[predictions.c.id], set_={"id": claim.excluded.id}
        ).returning(
            predictions.c.id,
            predictions.c.body,
            predictions.c.terminal,
        )
        # Written back as an upsert of rows that all exist: unlike an UPDATE executemany, it
        # goes out as one multi-row statement (RETURNING makes SQLAlchemy batch it).
        write = insert(predictions)
        self._write_predictions = write.on_conflict_do_update(
            index_elements=[predictions.c.id],
            set_={c: write.excluded[c] for c in ("status", "terminal", "body", "updated_at")},
        ).returning(predictions.c.id)
        self._add_files = insert(files).on_conflict_do_nothing().returning(files.c.id)

    def record(
        self, webhook_id: str, body: dict[str, Any], now: float, source: str = "webhook"
    ) -> Outcome:
        """Apply one verified delivery exactly once; returns whether it was new."""
        return self.record_batch([Delivery(webhook_id, body, now, source)])[0]

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
        ids = sorted({d.prediction_id for d in applied})
        # Rows are claimed in id order, so two processes never wait on each other in a cycle.
        seen: dict[str, float] = {}
        for d in applied:
            seen.setdefault(d.prediction_id, d.received_at)
        placeholders = [
            {
                "id": pid,
                "status": "",
                "terminal": False,
                "body": "null",
                "created_at": seen[pid],
                "updated_at": seen[pid],
            }
            for pid in ids
        ]
        rows = conn.execute(self._claim_predictions, placeholders).all()
        before = {r.id: (orjson.loads(r.body), r.terminal) for r in rows}
        after = {pid: current for pid, (current, _) in before.items()}
        latest: dict[str, float] = {}
        for d in applied:
            after[d.prediction_id] = rules.merge(after[d.prediction_id], d.body)
            latest[d.prediction_id] = d.received_at
        # merge() hands back the current dict when nothing changes, or the incoming one when
        # it becomes the state: identity tells both, without comparing large outputs.
        origin = {d.prediction_id: d for d in applied if after[d.prediction_id] is d.body}
        changed = [pid for pid in ids if after[pid] is not before[pid][0]]
        if changed:
            conn.execute(
                self._write_predictions,
                [
                    {
                        "id": pid,
                        "status": after[pid].get("status", ""),
                        "terminal": rules.is_terminal(after[pid]),
                        "body": origin[pid].text() if pid in origin else _dumps(after[pid]),
                        "created_at": seen[pid],
                        "updated_at": latest[pid],
                    }
                    for pid in changed
                ],
            ).all()
        jobs = [
            job
            for pid in changed
            if rules.is_terminal(after[pid]) and not before[pid][1]
            for job in self._file_jobs(pid, after[pid].get("output"), latest[pid])
        ]
        if jobs:
            conn.execute(self._add_files, jobs).all()

    def _file_jobs(self, prediction_id: str, output: object, now: float) -> list[dict[str, Any]]:
        jobs = []
        for n, url in enumerate(rules.output_files(output)):
            allowed = rules.host_allowed(url, self.download_hosts)
            jobs.append(
                {
                    "prediction_id": prediction_id,
                    "n": n,
                    "url": url,
                    "state": "queued" if allowed else "refused",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "lease_until": None,
                    "last_error": None if allowed else "host not in RECEIVER_DOWNLOAD_HOSTS",
                }
            )
        return jobs

    # --- the download queue ----------------------------------------------------------

    def claim(self, now: float, lease: float) -> Job | None:
        """Take one due job (or one whose lease ran out: its process died) for this worker."""
        due = ((files.c.state == "queued") & (files.c.next_attempt_at <= now)) | (
            (files.c.state == "running") & (files.c.lease_until < now)
        )
        with self.engine.begin() as conn:
            row = conn.execute(
                select(files.c.id, files.c.prediction_id, files.c.n, files.c.url, files.c.attempts)
                .where(due)
                .order_by(files.c.next_attempt_at)
                .limit(1)
                .with_for_update(skip_locked=True)  # PostgreSQL; SQLite's BEGIN IMMEDIATE is enough
            ).first()
            if row is None:
                return None
            conn.execute(
                update(files)
                .where(files.c.id == row.id)
                .values(state="running", attempts=row.attempts + 1, lease_until=now + lease)
            )
        return Job(row.id, row.prediction_id, row.n, row.url, row.attempts + 1)

    def finish(self, job: Job, path: str, sha256: str, size: int, content_type: str) -> None:
        self._set(
            job,
            state="done",
            path=path,
            sha256=sha256,
            size=size,
            content_type=content_type,
            lease_until=None,
            last_error=None,
        )

    def retry_or_bury(self, job: Job, error: str, retry_at: float | None) -> None:
        """Queue the job again at `retry_at`, or dead-letter it when that is None."""
        if retry_at is None:
            self._set(job, state="dead", last_error=error, lease_until=None)
        else:
            self._set(
                job, state="queued", last_error=error, next_attempt_at=retry_at, lease_until=None
            )

    def _set(self, job: Job, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(files).where(files.c.id == job.id).values(**values))

    # --- reconciliation --------------------------------------------------------------

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

    # --- reads -------------------------------------------------------------------------

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
                )
                .where(deliveries.c.prediction_id == prediction_id)
                .order_by(deliveries.c.received_at, deliveries.c.webhook_id)
            ).all()
            stored = conn.execute(
                select(files).where(files.c.prediction_id == prediction_id).order_by(files.c.n)
            ).all()
        return {
            **orjson.loads(row.body),
            "deliveries": [{**r._asdict(), "received_at": iso(r.received_at)} for r in history],
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
            created, pid = before
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

    def queue_depth(self) -> int:
        with self.engine.connect() as conn:
            pending = files.c.state.in_(("queued", "running"))
            depth = conn.execute(
                select(func.count()).select_from(files).where(pending)
            ).scalar_one()
        return int(depth)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _file_view(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("n", "url", "state", "attempts", "sha256", "size", "content_type", "last_error")
    view = {k: row[k] for k in keys}
    view["local"] = row["path"]
    return view
