"""Everything the receiver keeps, behind one small API, on SQLite or PostgreSQL.

`record` is the exactly-once step: the delivery row's primary key (the webhook-id) decides
whether a delivery is new, and the merged prediction state, the delivery and any download
jobs are committed in one transaction before the sender is acknowledged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, Engine, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from receiver import state
from receiver.tables import deliveries, files, predictions

Outcome = Literal["accepted", "duplicate"]


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
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._insert = dialect.insert  # both spell ON CONFLICT DO NOTHING the same way

    def record(
        self, webhook_id: str, body: dict[str, Any], now: float, source: str = "webhook"
    ) -> Outcome:
        """Apply one verified delivery exactly once; returns whether it was new."""
        prediction_id = str(body["id"])
        with self.engine.begin() as conn:
            added = conn.execute(
                self._insert(deliveries)
                .values(
                    webhook_id=webhook_id,
                    prediction_id=prediction_id,
                    status=body.get("status", ""),
                    source=source,
                    received_at=now,
                )
                .on_conflict_do_nothing()
                .returning(deliveries.c.webhook_id)  # rowcount is not reliable across drivers
            ).first()
            if added is None:
                return "duplicate"
            self._apply(conn, prediction_id, body, now)
        return "accepted"

    def _apply(
        self, conn: Connection, prediction_id: str, body: dict[str, Any], now: float
    ) -> None:
        row = conn.execute(
            select(predictions.c.body, predictions.c.terminal)
            .where(predictions.c.id == prediction_id)
            .with_for_update()
        ).first()
        current = json.loads(row.body) if row else None
        merged = state.merge(current, body)
        values = {
            "status": merged.get("status", ""),
            "terminal": state.is_terminal(merged),
            "body": json.dumps(merged),
            "updated_at": now,
        }
        if row is None:
            conn.execute(insert(predictions).values(id=prediction_id, created_at=now, **values))
        elif merged != current:
            where = predictions.c.id == prediction_id
            conn.execute(update(predictions).where(where).values(values))
        if values["terminal"] and not (row and row.terminal):
            self._enqueue_files(conn, prediction_id, merged.get("output"), now)

    def _enqueue_files(
        self, conn: Connection, prediction_id: str, output: object, now: float
    ) -> None:
        for n, url in enumerate(state.output_files(output)):
            allowed = state.host_allowed(url, self.download_hosts)
            conn.execute(
                self._insert(files)
                .values(
                    prediction_id=prediction_id,
                    n=n,
                    url=url,
                    state="queued" if allowed else "refused",
                    attempts=0,
                    next_attempt_at=now,
                    last_error=None if allowed else "host not in RECEIVER_DOWNLOAD_HOSTS",
                )
                .on_conflict_do_nothing()
            )

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
            **json.loads(row.body),
            "deliveries": [r._asdict() for r in history],
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


def _file_view(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("n", "url", "state", "attempts", "sha256", "size", "content_type", "last_error")
    view = {k: row[k] for k in keys}
    view["local"] = row["path"]
    return view
