"""The jobs' tables: a job and its chunks, from upload to the last downloaded file.

A chunk moves queued -> creating -> running -> done, or back to queued to be tried again, or
to failed (for good, with its error) or canceled. Every move out of `creating` or `running`
names the attempt it settles (the claim's `attempts`): a runner whose claim ran out and was
taken over by another settles nothing, so no chunk is done twice. The prediction behind a
running chunk is the one whose id our own create call returned; its state comes from the
`predictions` and `files` rows that ingest and the download worker keep.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update

from receiver.jobs.items import Chunk
from receiver.tables import (
    chunk_predictions,
    dialect_insert,
    files,
    job_chunks,
    jobs,
    predictions,
)

OPEN_CHUNK_STATES = ("queued", "creating", "running")
FINAL_JOB_STATES = ("completed", "canceled")


def prediction_input(texts: Sequence[str], normalize: bool) -> dict[str, Any]:
    """What a chunk sends as the prediction's input: its texts, as vectors in an npy file."""
    return {"texts": list(texts), "normalize": normalize, "output_format": "npy"}


def input_digest(value: object) -> str:
    """The same for the same input however its keys are ordered: a prediction's body, echoing
    the input, is matched to its chunk by it."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


class UploadGoneError(LookupError):
    """The job being uploaded was canceled or swept meanwhile."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} is no longer uploading (canceled, or idle too long)")


@dataclass(frozen=True)
class Claim:
    """A chunk this runner creates a prediction for. `attempt` and `claimed_at` fence every
    later move: an attempt number comes back after a claim that made nothing, a claim's time
    never does."""

    job_id: str
    n: int
    attempt: int
    claimed_at: float
    deployment: str
    input: dict[str, Any]


@dataclass(frozen=True)
class Stalled:
    """A chunk left in `creating` past its claim: its runner stopped, or its create call
    got no clear answer. Its prediction, if Replicate made one, has this input digest."""

    job_id: str
    n: int
    attempt: int
    claimed_at: float
    deployment: str
    digest: str
    lost_claims: int  # earlier claims of it that ended with no prediction


@dataclass(frozen=True)
class Finished:
    """A running chunk whose prediction is terminal: what became of it and of its file."""

    job_id: str
    n: int
    attempt: int
    prediction_id: str
    status: str
    file_state: str | None  # None: the output named no file
    file_error: str | None


@dataclass(frozen=True)
class Overdue:
    """A running chunk whose prediction has had no end for too long: its last known status."""

    job_id: str
    n: int
    attempt: int
    prediction_id: str
    status: str


class Follow(Enum):
    """What tying a created or found prediction to a chunk's attempt did (`JobStore.follow`)."""

    FOLLOWED = "followed"
    TAKEN = "taken"
    NOT_OURS = "not ours"


class JobStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"

    # Upload
    def create(self, job_id: str, deployment: str, normalize: bool, now: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(jobs).values(
                    id=job_id,
                    deployment=deployment,
                    normalize=normalize,
                    state="uploading",
                    texts=0,
                    chunks=0,
                    created_at=now,
                    updated_at=now,
                )
            )

    def add_chunks(self, job_id: str, normalize: bool, batch: list[Chunk], now: float) -> None:
        """Store chunks, queued, in one transaction; UploadGoneError if the job is no longer
        uploading (canceled, or swept as abandoned)."""
        rows = []
        for chunk in batch:
            texts = [item.text for item in chunk.items]
            ids = [item.id for item in chunk.items]
            rows.append(
                {
                    "job_id": job_id,
                    "n": chunk.n,
                    "first": chunk.first,
                    "count": len(texts),
                    "input": orjson.dumps({"ids": ids, "texts": texts}).decode(),
                    "digest": input_digest(prediction_input(texts, normalize)),
                    "state": "queued",
                    "attempts": 0,
                    "lost_claims": 0,
                    "next_attempt_at": now,
                }
            )
        with self.engine.begin() as conn:
            alive = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == "uploading")
                .values(updated_at=now)
            )
            if alive.rowcount != 1:
                raise UploadGoneError(job_id)
            conn.execute(insert(job_chunks), rows)

    def start(self, job_id: str, texts: int, chunks: int) -> bool:
        """The upload is whole: its chunks may run (unless it was canceled meanwhile)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == "uploading")
                .values(state="running", texts=texts, chunks=chunks)
            )
        return result.rowcount == 1

    def discard(self, job_id: str) -> None:
        """An upload that failed half way leaves nothing behind; a job that started is kept.
        The job's row goes first: a concurrent `add_chunks`, which updates that row, either
        commits before (its chunks are then deleted here) or finds the job gone."""
        unstarted = (jobs.c.id == job_id) & jobs.c.state.in_(("uploading", "canceled"))
        with self.engine.begin() as conn:
            if conn.execute(delete(jobs).where(unstarted)).rowcount == 1:
                conn.execute(delete(job_chunks).where(job_chunks.c.job_id == job_id))

    def sweep_uploads(self, idle_since: float) -> list[str]:
        """Discard uploads that stored nothing since `idle_since`: the process taking them
        died (a live one stores chunks, or touches the job, every UPLOAD_TOUCH_SECONDS). Each is
        deleted only if it is still such an upload: one that started meanwhile is kept. Their
        ids."""
        idle = (jobs.c.state == "uploading") & (jobs.c.updated_at < idle_since)
        with self.engine.connect() as conn:
            candidates = list(conn.execute(select(jobs.c.id).where(idle)).scalars())
        swept = []
        for job_id in candidates:
            with self.engine.begin() as conn:
                gone = conn.execute(delete(jobs).where(jobs.c.id == job_id, idle))
                if gone.rowcount == 1:
                    conn.execute(delete(job_chunks).where(job_chunks.c.job_id == job_id))
                    swept.append(job_id)
        return swept

    def touch(self, job_id: str, now: float) -> None:
        """An upload still coming in, though it stored no chunk lately (a slow client)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == "uploading")
                .values(updated_at=now)
            )

    # Reads
    def job(self, job_id: str, now: float) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                return None
            return self._progress(conn, row._asdict(), now)

    def jobs(self, limit: int, now: float) -> list[dict[str, Any]]:
        """Newest first."""
        query = select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [self._progress(conn, row._asdict(), now) for row in conn.execute(query)]

    def _progress(self, conn: Connection, job: dict[str, Any], now: float) -> dict[str, Any]:
        """Texts done of the total, the rate over the last minute, the time left at that rate,
        chunks by state and the errors of failed ones."""
        by_state = {
            state: {"chunks": chunks, "texts": int(texts or 0)}
            for state, chunks, texts in conn.execute(
                select(job_chunks.c.state, func.count(), func.sum(job_chunks.c.count))
                .where(job_chunks.c.job_id == job["id"])
                .group_by(job_chunks.c.state)
            )
        }
        recent = conn.execute(
            select(func.sum(job_chunks.c.count)).where(
                job_chunks.c.job_id == job["id"],
                job_chunks.c.state == "done",
                job_chunks.c.finished_at >= now - 60,
            )
        ).scalar()
        failed = conn.execute(
            select(job_chunks.c.n, job_chunks.c.first, job_chunks.c.count, job_chunks.c.error)
            .where(job_chunks.c.job_id == job["id"], job_chunks.c.state == "failed")
            .order_by(job_chunks.c.n)
            .limit(20)
        ).all()
        done = by_state.get("done", {}).get("texts", 0)
        failed_texts = by_state.get("failed", {}).get("texts", 0)
        canceled_texts = by_state.get("canceled", {}).get("texts", 0)
        rate = (recent or 0) / 60
        left = job["texts"] - done - failed_texts
        running = job["state"] == "running"
        return {
            **job,
            "done_texts": done,
            "failed_texts": failed_texts,
            "canceled_texts": canceled_texts,
            "texts_per_second": rate,
            "eta_seconds": left / rate if running and rate > 0 else None,
            "chunk_states": {state: value["chunks"] for state, value in by_state.items()},
            "failed_chunks": [row._asdict() for row in failed],
        }

    def chunk(self, job_id: str, n: int) -> dict[str, Any] | None:
        """One chunk with its ids, and its file's path once downloaded."""
        query = (
            select(job_chunks, files.c.path, files.c.state.label("file_state"))
            .outerjoin(
                files, and_(files.c.prediction_id == job_chunks.c.prediction_id, files.c.n == 0)
            )
            .where(job_chunks.c.job_id == job_id, job_chunks.c.n == n)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        found = row._asdict()
        found["ids"] = orjson.loads(found.pop("input"))["ids"]
        return found

    # Cancel
    def cancel(self, job_id: str, now: float) -> list[str]:
        """Cancel a job's open chunks; the prediction ids of those that were running."""
        with self.engine.begin() as conn:
            # One statement: a chunk that starts running meanwhile is canceled with its id.
            running = (
                conn.execute(
                    update(job_chunks)
                    .where(job_chunks.c.job_id == job_id, job_chunks.c.state.in_(OPEN_CHUNK_STATES))
                    .values(state="canceled", finished_at=now, lease_until=None)
                    .returning(job_chunks.c.prediction_id)
                )
                .scalars()
                .all()
            )
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state.not_in(FINAL_JOB_STATES))
                .values(state="canceled", finished_at=now)
            )
        return [pid for pid in running if pid]

    # The runner
    def claim(self, now: float, lease: float, limit: int, max_in_flight: int) -> list[Claim]:
        """Up to `limit` queued chunks of running jobs, due now, oldest first: each is this
        runner's until `now + lease` (PostgreSQL: rows another runner is claiming are skipped).
        No deployment gets more than `max_in_flight` chunks being created or running: what its
        instances cannot take waits in Replicate's queue, and a prediction's hour runs from its
        creation (RUN_DEADLINE_SECONDS). Two runners claiming at once may pass it by a batch."""
        query = (
            select(
                job_chunks.c.job_id,
                job_chunks.c.n,
                job_chunks.c.attempts,
                job_chunks.c.input,
                jobs.c.deployment,
                jobs.c.normalize,
            )
            .join(jobs, jobs.c.id == job_chunks.c.job_id)
            .where(
                job_chunks.c.state == "queued",
                job_chunks.c.next_attempt_at <= now,
                jobs.c.state == "running",
            )
            .order_by(job_chunks.c.next_attempt_at, job_chunks.c.job_id, job_chunks.c.n)
            .limit(limit)
        )
        if self.postgres:
            query = query.with_for_update(of=job_chunks, skip_locked=True)
        claims = []
        with self.engine.begin() as conn:
            room = self._room(conn, max_in_flight)
            full = [deployment for deployment, free in room.items() if free <= 0]
            for row in conn.execute(query.where(jobs.c.deployment.not_in(full))).all():
                free = room.get(row.deployment, max_in_flight)
                if free <= 0:
                    continue
                room[row.deployment] = free - 1
                attempt = row.attempts + 1
                conn.execute(
                    update(job_chunks)
                    .where(job_chunks.c.job_id == row.job_id, job_chunks.c.n == row.n)
                    .values(
                        state="creating",
                        attempts=attempt,
                        lease_until=now + lease,
                        claimed_at=now,
                    )
                )
                texts = orjson.loads(row.input)["texts"]
                claims.append(
                    Claim(
                        row.job_id,
                        row.n,
                        attempt,
                        now,
                        row.deployment,
                        prediction_input(texts, row.normalize),
                    )
                )
        return claims

    def _room(self, conn: Connection, max_in_flight: int) -> dict[str, int]:
        """Chunks each busy deployment may still take."""
        in_flight = (
            select(jobs.c.deployment, func.count())
            .select_from(job_chunks)
            .join(jobs, jobs.c.id == job_chunks.c.job_id)
            .where(job_chunks.c.state.in_(("creating", "running")))
            .group_by(jobs.c.deployment)
        )
        return {deployment: max_in_flight - count for deployment, count in conn.execute(in_flight)}

    def _move(
        self,
        job_id: str,
        n: int,
        attempt: int,
        current: str,
        claimed_at: float | None = None,
        **values: Any,
    ) -> bool:
        """Change one chunk in state `current` if this attempt (and, for a chunk being
        created, this claim) still holds it."""
        with self.engine.begin() as conn:
            return self._moved(conn, job_id, n, attempt, current, claimed_at, **values)

    def _moved(
        self,
        conn: Connection,
        job_id: str,
        n: int,
        attempt: int,
        current: str,
        claimed_at: float | None = None,
        **values: Any,
    ) -> bool:
        query = update(job_chunks).where(
            job_chunks.c.job_id == job_id,
            job_chunks.c.n == n,
            job_chunks.c.attempts == attempt,
            job_chunks.c.state == current,
        )
        if claimed_at is not None:
            query = query.where(job_chunks.c.claimed_at == claimed_at)
        result = conn.execute(query.values(**values))
        return result.rowcount == 1

    def renew(self, claim: Claim, now: float, until: float) -> bool:
        """Extend a claim right before its create call; False if it is no longer this
        runner's: then it must not be created. A claim whose lease ran out is lost even if no
        runner took it over yet: one may be listing Replicate to recover it."""
        with self.engine.begin() as conn:
            renewed = conn.execute(
                update(job_chunks)
                .where(
                    job_chunks.c.job_id == claim.job_id,
                    job_chunks.c.n == claim.n,
                    job_chunks.c.attempts == claim.attempt,
                    job_chunks.c.state == "creating",
                    job_chunks.c.claimed_at == claim.claimed_at,
                    job_chunks.c.lease_until >= now,
                )
                .values(lease_until=until)
            )
        return renewed.rowcount == 1

    def follow(self, held: Claim | Stalled, prediction_id: str) -> Follow:
        """Tie the prediction to this attempt of the chunk, for good: no other chunk or later
        attempt takes it. FOLLOWED: the chunk follows it to its file. TAKEN: another attempt
        holds it already; nothing changes. NOT_OURS: the chunk is no longer this attempt's
        (canceled, or taken over after a stall); the tie is kept so that no one adopts the
        prediction, which the caller stops."""
        claim = (
            dialect_insert(self.engine)(chunk_predictions)
            .values(prediction_id=prediction_id, job_id=held.job_id, n=held.n, attempt=held.attempt)
            .on_conflict_do_nothing()
            .returning(chunk_predictions.c.prediction_id)
        )
        with self.engine.begin() as conn:
            if conn.execute(claim).first() is None:
                return Follow.TAKEN
            moved = self._moved(
                conn,
                held.job_id,
                held.n,
                held.attempt,
                "creating",
                held.claimed_at,
                state="running",
                prediction_id=prediction_id,
                lease_until=None,
            )
        return Follow.FOLLOWED if moved else Follow.NOT_OURS

    def retry(self, job_id: str, n: int, attempt: int, at: float) -> bool:
        """Queue a running chunk again from `at`: its prediction failed or its file was lost."""
        return self._move(
            job_id,
            n,
            attempt,
            "running",
            state="queued",
            next_attempt_at=at,
            lease_until=None,
            prediction_id=None,
        )

    def put_back(self, held: Claim | Stalled, at: float, lost: bool) -> bool:
        """Queue a chunk being created again from `at`, its attempt not counted: the claim
        made no prediction (throttled, or its runner stopped or got no clear answer, and
        Replicate lists nothing). `lost`: count it among its lost claims."""
        return self._move(
            held.job_id,
            held.n,
            held.attempt,
            "creating",
            held.claimed_at,
            state="queued",
            attempts=held.attempt - 1,
            lost_claims=job_chunks.c.lost_claims + (1 if lost else 0),
            next_attempt_at=at,
            lease_until=None,
            prediction_id=None,
        )

    def finish(
        self,
        job_id: str,
        n: int,
        attempt: int,
        current: str,
        outcome: str,
        error: str | None,
        now: float,
        claimed_at: float | None = None,
    ) -> bool:
        """The chunk is done, or failed for good with `error` (`claimed_at`: the claim of a
        chunk being created)."""
        return self._move(
            job_id,
            n,
            attempt,
            current,
            claimed_at,
            state=outcome,
            error=error,
            finished_at=now,
            lease_until=None,
        )

    def expired(self, now: float, limit: int) -> list[Stalled]:
        """Chunks left in `creating` whose claim ran out."""
        query = (
            select(
                job_chunks.c.job_id,
                job_chunks.c.n,
                job_chunks.c.attempts,
                job_chunks.c.claimed_at,
                jobs.c.deployment,
                job_chunks.c.digest,
                job_chunks.c.lost_claims,
            )
            .join(jobs, jobs.c.id == job_chunks.c.job_id)
            .where(job_chunks.c.state == "creating", job_chunks.c.lease_until < now)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [
                Stalled(
                    row.job_id,
                    row.n,
                    row.attempts,
                    row.claimed_at,
                    row.deployment,
                    row.digest,
                    row.lost_claims,
                )
                for row in conn.execute(query)
            ]

    def followed(self, prediction_ids: list[str]) -> set[str]:
        """Those of `prediction_ids` that a chunk follows or followed."""
        query = select(chunk_predictions.c.prediction_id).where(
            chunk_predictions.c.prediction_id.in_(prediction_ids)
        )
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def finished(self, limit: int) -> list[Finished]:
        """Running chunks whose prediction is terminal, with their file's state."""
        query = (
            select(
                job_chunks.c.job_id,
                job_chunks.c.n,
                job_chunks.c.attempts,
                job_chunks.c.prediction_id,
                predictions.c.status,
                files.c.state.label("file_state"),
                files.c.last_error,
            )
            .join(predictions, predictions.c.id == job_chunks.c.prediction_id)
            .outerjoin(
                files, and_(files.c.prediction_id == job_chunks.c.prediction_id, files.c.n == 0)
            )
            .where(
                job_chunks.c.state == "running",
                predictions.c.terminal,
                # actionable: the file's download still running is not
                (predictions.c.status != "succeeded")
                | files.c.state.is_(None)
                | files.c.state.not_in(("queued", "running")),
            )
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [
                Finished(
                    row.job_id,
                    row.n,
                    row.attempts,
                    row.prediction_id,
                    row.status,
                    row.file_state,
                    row.last_error,
                )
                for row in conn.execute(query)
            ]

    def overdue(self, created_before: float, limit: int) -> list[Overdue]:
        """Running chunks whose prediction, created before `created_before`, has no end in
        the store: the status it was last seen in."""
        query = (
            select(
                job_chunks.c.job_id,
                job_chunks.c.n,
                job_chunks.c.attempts,
                job_chunks.c.prediction_id,
                predictions.c.status,
            )
            .join(predictions, predictions.c.id == job_chunks.c.prediction_id)
            .where(
                job_chunks.c.state == "running",
                predictions.c.terminal.is_(False),
                predictions.c.created_at < created_before,
            )
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [
                Overdue(row.job_id, row.n, row.attempts, row.prediction_id, row.status)
                for row in conn.execute(query)
            ]

    def prediction_error(self, prediction_id: str) -> str:
        with self.engine.connect() as conn:
            body = conn.execute(
                select(predictions.c.body).where(predictions.c.id == prediction_id)
            ).scalar()
        error = orjson.loads(body or "null") or {}
        return str(error.get("error") or error.get("status") or "no error given")

    def complete_jobs(self, now: float) -> int:
        """Running jobs without an open chunk are completed."""
        open_chunk = (
            select(job_chunks.c.n)
            .where(job_chunks.c.job_id == jobs.c.id, job_chunks.c.state.in_(OPEN_CHUNK_STATES))
            .exists()
        )
        with self.engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.state == "running", ~open_chunk)
                .values(state="completed", finished_at=now)
            )
        return result.rowcount
