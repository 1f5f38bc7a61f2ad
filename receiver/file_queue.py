"""The download queue: one `files` row per output file of a terminal prediction.

Jobs are queued by ingest, in the same transaction that makes their prediction terminal, so a
committed terminal state always has its files queued. The download worker claims them under a
lease: a worker that dies leaves a job whose lease runs out, and another worker takes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from receiver import rules
from receiver.tables import dialect_insert, files


@dataclass(frozen=True)
class Job:
    id: int
    prediction_id: str
    n: int
    url: str
    attempts: int


@dataclass(frozen=True)
class StoredFile:
    """A job's file as written to disk: what the `files` row records when the job is done."""

    path: str
    sha256: str
    size: int
    content_type: str


class FileQueue:
    """Queue, claim and settle download jobs; `download_hosts` decides which may be fetched."""

    def __init__(self, engine: Engine, download_hosts: list[str]) -> None:
        self.engine = engine
        self.download_hosts = download_hosts
        self._add_files = (
            dialect_insert(engine)(files).on_conflict_do_nothing().returning(files.c.id)
        )

    def enqueue(self, conn: Connection, jobs: list[dict[str, Any]]) -> None:
        """Add jobs inside the caller's transaction; a job already queued is left alone."""
        if jobs:
            conn.execute(self._add_files, jobs).all()

    def jobs_for(self, prediction_id: str, output: object, now: float) -> list[dict[str, Any]]:
        """One row per file in `output`: queued, or refused with the reason it cannot be fetched."""
        jobs = []
        for n, url in enumerate(rules.output_files(output)):
            refusal = self._refusal(url)
            jobs.append(
                {
                    "prediction_id": prediction_id,
                    "n": n,
                    # PostgreSQL text cannot hold NUL: the row keeps it escaped, as JSON would.
                    "url": url.replace("\x00", "\\u0000"),
                    "state": "refused" if refusal else "queued",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "lease_until": None,
                    "last_error": refusal,
                }
            )
        return jobs

    def _refusal(self, url: str) -> str | None:
        """Why this file must not be fetched, or None."""
        if "\x00" in url:
            return "URL holds a NUL character"
        if not rules.host_allowed(url, self.download_hosts):
            return "host not in RECEIVER_DOWNLOAD_HOSTS"
        return None

    def claim(self, now: float, lease: float, max_attempts: int) -> Job | None:
        """Take one due job (or one whose lease ran out: its process died) for this worker.
        A job whose lease ran out on its last attempt is dead-lettered, not run again."""
        expired = (files.c.state == "running") & (files.c.lease_until < now)
        due = ((files.c.state == "queued") & (files.c.next_attempt_at <= now)) | expired
        with self.engine.begin() as conn:
            conn.execute(
                update(files)
                .where(expired & (files.c.attempts >= max_attempts))
                .values(
                    state="dead",
                    lease_until=None,
                    last_error=f"gave up after {max_attempts} attempts (the last never finished)",
                )
            )
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

    def finish(self, job: Job, stored: StoredFile) -> None:
        self._set(
            job,
            state="done",
            path=stored.path,
            sha256=stored.sha256,
            size=stored.size,
            content_type=stored.content_type,
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

    def depth(self) -> int:
        """Jobs queued or running: the metrics gauge."""
        with self.engine.connect() as conn:
            pending = files.c.state.in_(("queued", "running"))
            depth = conn.execute(
                select(func.count()).select_from(files).where(pending)
            ).scalar_one()
        return int(depth)

    def _set(self, job: Job, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(files).where(files.c.id == job.id).values(**values))
