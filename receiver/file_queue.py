"""The download queue: one `files` row per output file of a terminal prediction.

Jobs are queued by ingest, in the same transaction that makes their prediction terminal, so a
committed terminal state always has its files queued. The download worker claims them under a
lease: a worker that dies leaves a job whose lease runs out, and another worker takes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Connection, Engine, bindparam, func, select, update

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


@dataclass(frozen=True)
class Settlement:
    """How one attempt at a job ended: done (with its file), queued again, or dead.
    `attempt` is the claim it settles: a worker whose lease ran out, and whose job another
    worker has claimed since (attempt + 1), settles nothing. `counted`: False when the attempt
    was abandoned (the worker stopped), so it is not charged against the limit."""

    job_id: int
    attempt: int
    state: Literal["done", "queued", "dead"]
    next_attempt_at: float
    last_error: str | None = None
    stored: StoredFile | None = None
    counted: bool = True

    def row(self) -> dict[str, Any]:
        stored = self.stored
        return {
            "job_id": self.job_id,
            "attempt": self.attempt,
            "new_attempts": self.attempt if self.counted else self.attempt - 1,
            "new_state": self.state,
            "new_next_attempt_at": self.next_attempt_at,
            "new_last_error": self.last_error,
            "new_path": stored.path if stored else None,
            "new_sha256": stored.sha256 if stored else None,
            "new_size": stored.size if stored else None,
            "new_content_type": stored.content_type if stored else None,
        }


@dataclass(frozen=True)
class Turn:
    """What one turn of a download worker hands to the queue, and what it asks of it."""

    now: float
    lease: float  # seconds a claimed or renewed job stays this worker's
    max_attempts: int
    want: int  # jobs to claim: the worker's free slots
    settled: list[Settlement] = field(default_factory=list)
    renew: list[Job] = field(default_factory=list)  # jobs still running here
    # Look for jobs whose lease ran out (their worker died). Not every turn: on PostgreSQL the
    # `running` part of the index keeps an entry for every job run since the last vacuum.
    reclaim: bool = True


class FileQueue:
    """Queue, claim and settle download jobs; `download_hosts` decides which may be fetched."""

    def __init__(self, engine: Engine, download_hosts: list[str], max_files: int) -> None:
        self.engine = engine
        self.max_files = max_files
        self.allow_list = rules.AllowList(download_hosts)
        # No RETURNING: without it, psycopg sends the rows in pipeline mode, three times as
        # fast for an output of 200 000 files (which must be stored within the store timeout).
        self._add_files = dialect_insert(engine)(files).on_conflict_do_nothing()
        # One statement for every settlement of a turn (executemany). The claim is the job
        # and its attempt number: a job another worker claimed since is left alone.
        this_claim = (
            (files.c.id == bindparam("job_id"))
            & (files.c.attempts == bindparam("attempt"))
            & (files.c.state == "running")
        )
        self._settle = (
            update(files)
            .where(this_claim)
            .values(
                state=bindparam("new_state"),
                attempts=bindparam("new_attempts"),
                next_attempt_at=bindparam("new_next_attempt_at"),
                last_error=bindparam("new_last_error"),
                path=bindparam("new_path"),
                sha256=bindparam("new_sha256"),
                size=bindparam("new_size"),
                content_type=bindparam("new_content_type"),
                lease_until=None,
            )
        )
        self._renew = (
            update(files).where(this_claim).values(lease_until=bindparam("new_lease_until"))
        )

    def enqueue(self, conn: Connection, jobs: list[dict[str, Any]]) -> None:
        """Add jobs inside the caller's transaction; a job already queued is left alone."""
        if jobs:
            conn.execute(self._add_files, jobs)

    def jobs_for(self, prediction_id: str, output: object, now: float) -> list[dict[str, Any]]:
        """One row per file in `output`: queued, or refused with the reason it cannot be fetched.
        Past `max_files`, one more row says how many were left out: storing every row of a
        larger output would take longer than a delivery may wait, on every retry."""
        urls = rules.output_files(output)
        jobs = []
        for n, url in enumerate(urls[: self.max_files]):
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
        if len(urls) > self.max_files:
            left_out = len(urls) - self.max_files
            jobs.append(
                {
                    "prediction_id": prediction_id,
                    "n": self.max_files,
                    "url": f"({left_out} more files)",
                    "state": "refused",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "lease_until": None,
                    "last_error": (
                        f"output holds {len(urls)} files; RECEIVER_MAX_FILES_PER_PREDICTION "
                        f"collects the first {self.max_files}"
                    ),
                }
            )
        return jobs

    def _refusal(self, url: str) -> str | None:
        """Why this file must not be fetched, or None."""
        if "\x00" in url:
            return "URL holds a NUL character"
        if not self.allow_list.allows(url):
            return "host not in RECEIVER_DOWNLOAD_HOSTS"
        return None

    def cycle(self, turn: Turn) -> list[Job]:
        """One transaction per turn of a download worker: record how its finished jobs ended,
        extend the leases of those still running, and claim up to `turn.want` due jobs (or
        jobs whose lease ran out: their process died). A job whose lease ran out on its last
        attempt is dead-lettered, not run again. Few, short transactions: the writer process
        needs the same lock on SQLite."""
        with self.engine.begin() as conn:
            if turn.settled:
                conn.execute(self._settle, [s.row() for s in turn.settled])
            if turn.renew:
                until = turn.now + turn.lease
                renewals = [
                    {"job_id": job.id, "attempt": job.attempts, "new_lease_until": until}
                    for job in turn.renew
                ]
                conn.execute(self._renew, renewals)
            if turn.reclaim:
                self._bury_given_up(conn, turn)
            return self._claim(conn, turn) if turn.want > 0 else []

    def _bury_given_up(self, conn: Connection, turn: Turn) -> None:
        expired = (files.c.state == "running") & (files.c.lease_until < turn.now)
        conn.execute(
            update(files)
            .where(expired & (files.c.attempts >= turn.max_attempts))
            .values(
                state="dead",
                lease_until=None,
                last_error=f"gave up after {turn.max_attempts} attempts (the last never finished)",
            )
        )

    def _claim(self, conn: Connection, turn: Turn) -> list[Job]:
        """Due jobs in the order they fell due, then expired leases; each query walks the
        (state, next_attempt_at) index and stops at `want` rows: no sort of the backlog."""
        columns = (files.c.id, files.c.prediction_id, files.c.n, files.c.url, files.c.attempts)
        due = (files.c.state == "queued") & (files.c.next_attempt_at <= turn.now)
        expired = (files.c.state == "running") & (files.c.lease_until < turn.now)
        if conn.dialect.name == "postgresql":
            # Walk the index in order and stop at `want` rows. Left to its statistics, which
            # lag a large enqueue, the planner may fetch every due row and sort them: 47 ms a
            # turn with 90 000 queued, in a backend that competes with the webhooks' writer.
            conn.exec_driver_sql("SET LOCAL enable_sort = off")
        rows = list(
            conn.execute(
                select(*columns)
                .where(due)
                .order_by(files.c.state, files.c.next_attempt_at)
                .limit(turn.want)
                .with_for_update(skip_locked=True)  # PostgreSQL; SQLite's write lock suffices
            )
        )
        if len(rows) < turn.want and turn.reclaim:
            rows += conn.execute(
                select(*columns)
                .where(expired)
                .limit(turn.want - len(rows))
                .with_for_update(skip_locked=True)
            ).all()
        if not rows:
            return []
        conn.execute(
            update(files)
            .where(files.c.id.in_([row.id for row in rows]))
            .values(
                state="running",
                attempts=files.c.attempts + 1,
                lease_until=turn.now + turn.lease,
            )
        )
        return [Job(r.id, r.prediction_id, r.n, r.url, r.attempts + 1) for r in rows]

    def depth(self) -> int:
        """Jobs queued or running: the metrics gauge."""
        with self.engine.connect() as conn:
            pending = files.c.state.in_(("queued", "running"))
            depth = conn.execute(
                select(func.count()).select_from(files).where(pending)
            ).scalar_one()
        return int(depth)
