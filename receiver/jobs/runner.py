"""The job runner: a step, repeated in each receiver process, that moves chunks along.

Each step: (1) chunks whose creating runner stopped are found again or queued again; (2)
chunks whose prediction ended are done once their file is downloaded, or tried again, or
failed for good after RECEIVER_JOB_MAX_ATTEMPTS; (3) queued chunks become predictions, as
fast as the shared rate limit allows; (4) jobs without an open chunk are completed.

The created prediction is recorded like a delivery before the chunk points at it: its row is
what reconciliation fetches again if its webhook never comes. If this process dies between
the two, the chunk's claim runs out and step (1) finds the recorded prediction by its input.
A chunk is tied to a prediction only by an id our own create call returned, or by a recorded
body whose input is exactly the chunk's: a replayed delivery cannot put other vectors in it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from replicate.exceptions import ReplicateError
from sqlalchemy import select

from receiver.jobs.rate import SharedRateLimit
from receiver.jobs.store import Claim, Finished, JobStore, input_digest
from receiver.replicate_api import ThrottledError
from receiver.store import Store
from receiver.tables import job_chunks, jobs, predictions

log = logging.getLogger("receiver")
CLAIM_BATCH = 20
FOLLOW_BATCH = 500
RETRY_BACKOFF_SECONDS = (5, 30, 120)
WEBHOOK_EVENTS = ["completed"]  # the receiver needs the end only


class ReplicateCalls(Protocol):
    def create(self, deployment: str, payload: dict[str, Any]) -> dict[str, Any]: ...

    def cancel(self, prediction_id: str) -> None: ...


class JobRunner:
    def __init__(
        self,
        store: Store,
        api: ReplicateCalls,
        webhook_url: str,
        limit: SharedRateLimit,
        max_attempts: int,
        claim_seconds: float = 120,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`claim_seconds`: how long a chunk being created stays this runner's. It outlives
        the create call (Replicate.create gives up after a quarter of it), so a chunk is taken
        over only from a runner that stopped, never from one still waiting for an answer."""
        self.store = store
        self.jobs: JobStore = store.jobs
        self.api = api
        self.webhook_url = webhook_url
        self.limit = limit
        self.max_attempts = max_attempts
        self.claim_seconds = claim_seconds
        self.clock = clock

    def step(self) -> bool:
        """One pass; True when it created predictions (more may be due at once)."""
        self._recover()
        self._follow()
        created = self._dispatch()
        self.jobs.complete_jobs(self.clock())
        return created > 0

    # (1) runners that stopped while creating
    def _recover(self) -> None:
        for job_id, n, attempt in self.jobs.expired(self.clock(), CLAIM_BATCH):
            prediction_id = self._recorded_prediction(job_id, n)
            if prediction_id is not None:
                self.jobs.follow(job_id, n, attempt, prediction_id)
                log.info("job %s chunk %d: found its prediction %s", job_id, n, prediction_id)
            else:
                self.jobs.retry(job_id, n, attempt, "creating", self.clock())

    def _recorded_prediction(self, job_id: str, n: int) -> str | None:
        """A prediction recorded since the chunk was claimed, on its deployment, whose input
        is the chunk's own, and that no other chunk follows."""
        engine = self.store.engine
        with engine.connect() as conn:
            chunk = conn.execute(
                select(job_chunks.c.digest, job_chunks.c.claimed_at, jobs.c.deployment)
                .join(jobs, jobs.c.id == job_chunks.c.job_id)
                .where(job_chunks.c.job_id == job_id, job_chunks.c.n == n)
            ).one()
            followed = select(job_chunks.c.prediction_id).where(
                job_chunks.c.prediction_id.is_not(None)
            )
            candidates = conn.execute(
                select(predictions.c.id, predictions.c.body).where(
                    predictions.c.created_at >= chunk.claimed_at,
                    predictions.c.id.not_in(followed),
                )
            )
            for prediction_id, text in candidates:
                body = orjson.loads(text)
                if body.get("deployment") != chunk.deployment:
                    continue
                if input_digest(body.get("input")) == chunk.digest:
                    return str(prediction_id)
        return None

    # (2) predictions that ended
    def _follow(self) -> None:
        for finished in self.jobs.finished(FOLLOW_BATCH):
            if finished.status != "succeeded":
                error = self.jobs.prediction_error(finished.prediction_id)
                self._again_or_fail(finished, f"prediction {finished.status}: {error}")
            elif finished.file_state == "done":
                self._finish(finished, "done", None)
            elif finished.file_state is None:
                self._finish(finished, "failed", "the prediction's output is not an npy file")
            elif finished.file_state == "refused":
                self._finish(
                    finished, "failed", f"its file cannot be fetched: {finished.file_error}"
                )
            elif finished.file_state == "dead":
                self._again_or_fail(finished, f"its file was lost: {finished.file_error}")
            # queued or running: the download worker has it

    def _finish(self, finished: Finished, outcome: str, error: str | None) -> None:
        self.jobs.finish(
            finished.job_id, finished.n, finished.attempt, "running", outcome, error, self.clock()
        )

    def _again_or_fail(self, finished: Finished, error: str) -> None:
        if finished.attempt >= self.max_attempts:
            self._finish(finished, "failed", f"{error} (after {finished.attempt} attempts)")
            return
        backoff = RETRY_BACKOFF_SECONDS[min(finished.attempt, len(RETRY_BACKOFF_SECONDS)) - 1]
        log.info("job %s chunk %d: %s; again in %d s", finished.job_id, finished.n, error, backoff)
        self.jobs.retry(
            finished.job_id, finished.n, finished.attempt, "running", self.clock() + backoff
        )

    # (3) new predictions
    def _dispatch(self) -> int:
        claims = self.jobs.claim(self.clock(), self.claim_seconds, CLAIM_BATCH)
        created = 0
        for index, claim in enumerate(claims):
            wait = self.limit.take(self.clock())
            if wait > 0:
                self._put_back(claims[index:], self.clock() + wait)
                break
            if not self.jobs.renew(claim, self.clock() + self.claim_seconds):
                continue  # no longer ours: another runner has it, or the job was canceled
            try:
                created += self._create(claim)
            except ThrottledError as exc:
                until = self.clock() + exc.retry_after
                self.limit.block(until, self.clock())
                self._put_back(claims[index:], until)
                break
        return created

    def _create(self, claim: Claim) -> int:
        payload = {
            "input": claim.input,
            "webhook": self.webhook_url,
            "webhook_events_filter": WEBHOOK_EVENTS,
        }
        try:
            body = self.api.create(claim.deployment, payload)
        except ThrottledError:
            raise  # the whole batch waits: _dispatch
        except ReplicateError as exc:  # refused: the same request would be refused again
            reason = f"Replicate refused the prediction: {exc.status} {exc.detail or exc.title}"
            self.jobs.finish(
                claim.job_id, claim.n, claim.attempt, "creating", "failed", reason, self.clock()
            )
            return 0
        except Exception as exc:  # no answer: it may or may not exist; a later attempt
            log.warning("job %s chunk %d: create failed: %s", claim.job_id, claim.n, exc)
            at = self.clock() + RETRY_BACKOFF_SECONDS[0]
            self.jobs.retry(claim.job_id, claim.n, claim.attempt, "creating", at)
            return 0
        prediction_id = str(body["id"])
        self.store.record(f"create:{prediction_id}", body, self.clock(), source="create")
        if not self.jobs.follow(claim.job_id, claim.n, claim.attempt, prediction_id):
            # the job was canceled while Replicate answered: stop the prediction
            cancel_quietly(self.api, prediction_id)
        return 1

    def _put_back(self, claims: list[Claim], at: float) -> None:
        for claim in claims:
            self.jobs.retry(claim.job_id, claim.n, claim.attempt, "creating", at, counted=False)


def cancel_quietly(api: ReplicateCalls, prediction_id: str) -> None:
    """Ask Replicate to stop a prediction; a failure is logged (its result is ignored anyway)."""
    try:
        api.cancel(prediction_id)
    except Exception as exc:
        log.warning("could not cancel prediction %s: %s", prediction_id, exc)
