"""The job runner: a step, repeated in each receiver process, that moves chunks along.

Each step: (0) uploads whose receiver died half way are discarded; (1) chunks whose creating
runner stopped, or whose create call got no clear answer, are found on Replicate or queued
again; (2) chunks whose prediction ended are done once their file is downloaded, or tried
again, or failed for good after RECEIVER_JOB_MAX_ATTEMPTS (a prediction with no end an hour
after its creation is canceled and counts as failed); (3) queued chunks become predictions, as
fast as the shared rate limit allows; (4) jobs without an open chunk are completed.

The created prediction is recorded like a delivery before the chunk points at it: its row is
what reconciliation fetches again if its webhook never comes. If this process dies between
Replicate's answer and that record, or the answer never comes (a timeout, a 5xx), the
chunk's claim runs out and step (1) looks for the prediction in Replicate's own list of
predictions created since the claim: on the chunk's deployment, with exactly its input, and
followed by no other chunk. A chunk is tied to a prediction only by Replicate's answers to our
token, never by a delivery: a replayed one cannot put other vectors in it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from replicate.exceptions import ReplicateError

from receiver.jobs.rate import SharedRateLimit
from receiver.jobs.store import (
    Claim,
    Finished,
    Follow,
    JobStore,
    Overdue,
    Stalled,
    input_digest,
)
from receiver.replicate_api import ThrottledError
from receiver.store import Store

log = logging.getLogger("receiver")
CLAIM_BATCH = 20
FOLLOW_BATCH = 500
RETRY_BACKOFF_SECONDS = (5, 30, 120)
WEBHOOK_EVENTS = ["completed"]  # the receiver needs the end only
CLOCK_SKEW_SECONDS = 300  # Replicate's clock may differ from ours: list a little earlier
UPLOAD_IDLE_SECONDS = 600  # an upload that stored nothing for this long has lost its process
# Replicate ends a prediction after 30 minutes, and the reconciler asks about a silent one every
# RECEIVER_RECONCILE_INTERVAL_SECONDS: an end still unknown after an hour will not come.
RUN_DEADLINE_SECONDS = 3600
# Claims of one chunk that may end with no prediction: about an hour of tries at the default
# RECEIVER_JOB_CLAIM_SECONDS.
MAX_LOST_CLAIMS = 30


class ReplicateCalls(Protocol):
    def create(self, deployment: str, payload: dict[str, Any]) -> dict[str, Any]: ...

    def cancel(self, prediction_id: str) -> None: ...

    def created_after(self, after: float) -> Iterator[dict[str, Any]]: ...


class JobRunner:
    def __init__(
        self,
        store: Store,
        api: ReplicateCalls,
        webhook_url: str,
        limit: SharedRateLimit,
        max_attempts: int,
        claim_seconds: float = 120,
        max_in_flight: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`claim_seconds`: how long a chunk being created stays this runner's. It outlives
        the create call (Replicate.create gives up after a quarter of it), so a chunk is taken
        over only from a runner that stopped, never from one still waiting for an answer.
        `max_in_flight`: chunks being created or running on one deployment at most."""
        self.store = store
        self.jobs: JobStore = store.jobs
        self.api = api
        self.webhook_url = webhook_url
        self.limit = limit
        self.max_attempts = max_attempts
        self.claim_seconds = claim_seconds
        self.max_in_flight = max_in_flight
        self.clock = clock

    def step(self) -> bool:
        """One pass; True when it created predictions (more may be due at once)."""
        for job_id in self.jobs.sweep_uploads(self.clock() - UPLOAD_IDLE_SECONDS):
            log.warning("job %s: its upload stopped half way; discarded", job_id)
        self._recover()
        self._follow()
        created = self._dispatch()
        self.jobs.complete_jobs(self.clock())
        return created > 0

    # (1) runners that stopped while creating, and creates without a clear answer
    def _recover(self) -> None:
        stalled = self.jobs.expired(self.clock(), CLAIM_BATCH)
        if not stalled:
            return
        since = min(chunk.claimed_at for chunk in stalled) - CLOCK_SKEW_SECONDS
        try:
            listed = self._listed_since(since, stalled)
        except Exception as exc:  # unknown: wait rather than risk creating a chunk twice
            log.warning("cannot list Replicate's predictions to recover chunks: %s", exc)
            return
        made = self._unfollowed(listed)
        for chunk in stalled:
            found = made.get((chunk.deployment, chunk.digest))
            if found:
                self._adopt(chunk, found.pop())
            else:
                self._lost(chunk)

    def _lost(self, chunk: Stalled) -> None:
        """A claim that made nothing on Replicate is not an attempt: the chunk is queued
        again after a backoff, so an outage of the API stalls a job without failing it. A chunk
        no claim of which comes to anything for MAX_LOST_CLAIMS tries (an input whose create
        always times out) fails for good: its job must end."""
        if chunk.lost_claims + 1 < MAX_LOST_CLAIMS:
            self.jobs.put_back(chunk, self.clock() + RETRY_BACKOFF_SECONDS[0], lost=True)
            return
        reason = f"no prediction came of {MAX_LOST_CLAIMS} tries to create it"
        self.jobs.finish(
            chunk.job_id,
            chunk.n,
            chunk.attempt,
            "creating",
            "failed",
            reason,
            self.clock(),
            chunk.claimed_at,
        )

    def _listed_since(
        self, since: float, stalled: list[Stalled]
    ) -> dict[str, tuple[tuple[str, str], dict[str, Any]]]:
        """Replicate's predictions since `since` that a stalled chunk may own, by id (a page
        boundary moving under new creations may list one twice), with their chunk key."""
        deployments = {chunk.deployment for chunk in stalled}
        wanted = {(chunk.deployment, chunk.digest) for chunk in stalled}
        listed = {}
        for body in self.api.created_after(since):
            deployment = str(body.get("deployment"))
            if deployment not in deployments:
                continue  # and its input is never hashed
            try:
                key = (deployment, input_digest(body.get("input")))
            except TypeError:  # not ours: our inputs are strings and a flag
                continue
            if key in wanted:
                listed[str(body["id"])] = (key, body)
        return listed

    def _unfollowed(
        self, listed: dict[str, tuple[tuple[str, str], dict[str, Any]]]
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """The listed predictions no chunk has followed, by chunk key."""
        taken = self.jobs.followed(list(listed))
        made: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for prediction_id, (key, body) in listed.items():
            if prediction_id not in taken:
                made.setdefault(key, []).append(body)
        return made

    def _adopt(self, chunk: Stalled, body: dict[str, Any]) -> None:
        """A stalled chunk's prediction, found on Replicate: recorded, then followed. If
        another runner took it first, the chunk stays stalled for the next step."""
        prediction_id = str(body["id"])
        self.store.record(f"create:{prediction_id}", body, self.clock(), source="create")
        outcome = self.jobs.follow(chunk, prediction_id)
        log.info("job %s chunk %d: found %s", chunk.job_id, chunk.n, prediction_id)
        if outcome is Follow.NOT_OURS:  # canceled meanwhile: stop it
            cancel_quietly(self.api, prediction_id)

    # (2) predictions that ended, or whose end will not come
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
        for late in self.jobs.overdue(self.clock() - RUN_DEADLINE_SECONDS, FOLLOW_BATCH):
            cancel_quietly(self.api, late.prediction_id)
            minutes = RUN_DEADLINE_SECONDS // 60
            self._again_or_fail(
                late, f"prediction {late.prediction_id} still {late.status} after {minutes} minutes"
            )

    def _finish(self, finished: Finished | Overdue, outcome: str, error: str | None) -> None:
        self.jobs.finish(
            finished.job_id, finished.n, finished.attempt, "running", outcome, error, self.clock()
        )

    def _again_or_fail(self, finished: Finished | Overdue, error: str) -> None:
        if finished.attempt >= self.max_attempts:
            self._finish(finished, "failed", f"{error} (after {finished.attempt} attempts)")
            return
        backoff = RETRY_BACKOFF_SECONDS[min(finished.attempt, len(RETRY_BACKOFF_SECONDS)) - 1]
        log.info("job %s chunk %d: %s; again in %d s", finished.job_id, finished.n, error, backoff)
        self.jobs.retry(finished.job_id, finished.n, finished.attempt, self.clock() + backoff)

    # (3) new predictions
    def _dispatch(self) -> int:
        claims = self.jobs.claim(self.clock(), self.claim_seconds, CLAIM_BATCH, self.max_in_flight)
        created = 0
        for index, claim in enumerate(claims):
            wait = self.limit.take(self.clock())
            if wait > 0:
                self._put_back(claims[index:], self.clock() + wait)
                break
            if not self.jobs.renew(claim, self.clock(), self.clock() + self.claim_seconds):
                continue  # no longer ours: its lease ran out, another runner has it, or canceled
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
        except ReplicateError as exc:
            if exc.status is not None and exc.status < 500:  # refused: it would be again
                reason = f"Replicate refused the prediction: {exc.status} {exc.detail or exc.title}"
                self.jobs.finish(
                    claim.job_id,
                    claim.n,
                    claim.attempt,
                    "creating",
                    "failed",
                    reason,
                    self.clock(),
                    claim.claimed_at,
                )
                return 0
            self._unclear(claim, exc)
            return 0
        except Exception as exc:
            self._unclear(claim, exc)
            return 0
        prediction_id = str(body["id"])
        self.store.record(f"create:{prediction_id}", body, self.clock(), source="create")
        outcome = self.jobs.follow(claim, prediction_id)
        if outcome is Follow.NOT_OURS:  # canceled, or taken over, while Replicate answered
            cancel_quietly(self.api, prediction_id)
        return 1

    def _unclear(self, claim: Claim, exc: Exception) -> None:
        """No clear answer: the prediction may exist. The chunk stays claimed until its claim
        runs out; then step (1) looks for it on Replicate before creating it again."""
        log.warning("job %s chunk %d: create unclear: %s", claim.job_id, claim.n, exc)

    def _put_back(self, claims: list[Claim], at: float) -> None:
        for claim in claims:
            self.jobs.put_back(claim, at, lost=False)


def cancel_quietly(api: ReplicateCalls, prediction_id: str) -> None:
    """Ask Replicate to stop a prediction; a failure is logged (its result is ignored anyway)."""
    try:
        api.cancel(prediction_id)
    except Exception as exc:
        log.warning("could not cancel prediction %s: %s", prediction_id, exc)
