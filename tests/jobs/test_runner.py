"""The job runner, one step at a time on a clock the test moves: the shared creation limit,
429s, retries, a runner that stopped half way, and what a replayed delivery cannot do."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx

from receiver.downloads import Downloader
from receiver.jobs.rate import SharedRateLimit
from receiver.jobs.runner import (
    MAX_LOST_CLAIMS,
    RETRY_BACKOFF_SECONDS,
    RUN_DEADLINE_SECONDS,
    JobRunner,
    ReplicateCalls,
)
from receiver.jobs.store import Claim, Follow, prediction_input
from receiver.store import Store
from tests.support.downloading import drain
from tests.support.jobs import AUTH, JobRig, created, end, job, submit, uploaded_npy
from tests.support.receiving import deliver, read


def test_creation_never_outruns_the_limit_shared_by_every_runner(rig: JobRig) -> None:
    submit(rig, texts=40, chunk_size=2)  # 20 chunks
    other = Store.open(rig.store.config)  # another receiver process on the same database
    other_runner = JobRunner(
        other,
        rig.runner.api,
        webhook_url=rig.runner.webhook_url,
        limit=SharedRateLimit(other.engine, "predictions.create", 70),
        max_attempts=3,
        clock=rig.clock,
    )
    assert rig.runner.step() is True
    assert len(created(rig)) == 10  # the burst
    assert other_runner.step() is False  # the same bucket, empty
    rig.clock.now += 1.0  # 70 a minute, less the burst: one a second
    assert other_runner.step() is True
    assert len(created(rig)) == 11
    rig.clock.now += 4.5
    rig.runner.step()
    assert len(created(rig)) == 15
    other.engine.dispose()


def test_a_429_puts_the_chunks_back_uncounted_until_its_reset(rig: JobRig) -> None:
    job_id = submit(rig, texts=3, chunk_size=1)
    rig.standin.throttled = 1  # the next API call answers 429, reset in 1 s
    assert rig.runner.step() is False
    assert created(rig) == []
    chunk = read(rig.url, f"/jobs/{job_id}/chunks/0").json()
    assert (chunk["state"], chunk["attempts"]) == ("queued", 0)
    rig.clock.now += 0.5
    rig.runner.step()
    assert created(rig) == []  # the reset has not come
    rig.clock.now += 0.6
    assert rig.runner.step() is True
    assert len(created(rig)) == 1  # one call at the reset, then the steady rate: no burst
    rig.clock.now += 2.0
    rig.runner.step()
    assert len(created(rig)) == 3


def test_a_failed_prediction_is_tried_again_then_fails_for_good_with_its_error(
    rig: JobRig,
) -> None:
    job_id = submit(rig, texts=2, chunk_size=2)
    for attempt in range(1, 4):
        rig.runner.step()
        assert len(created(rig)) == attempt
        end(rig, created(rig)[-1], "failed", "CUDA out of memory")
        rig.runner.step()  # sees the failure: queued again after a backoff, or failed
        rig.runner.step()
        assert len(created(rig)) == attempt  # not before the backoff
        rig.clock.now += 200
    shown = job(rig, job_id)
    assert shown["state"] == "completed"
    assert (shown["done_texts"], shown["failed_texts"]) == (0, 2)
    [failed] = shown["failed_chunks"]
    assert failed["error"] == "prediction failed: CUDA out of memory (after 3 attempts)"
    assert len(created(rig)) == 3


def died_claiming(rig: JobRig) -> list[Claim]:
    """What a runner that dies right after claiming leaves: chunks `creating`, claimed."""
    return rig.store.jobs.claim(rig.clock.now, rig.runner.claim_seconds, 10, max_in_flight=100)


def chunk_of(rig: JobRig, job_id: str, n: int = 0) -> dict[str, Any]:
    found: dict[str, Any] = read(rig.url, f"/jobs/{job_id}/chunks/{n}").json()
    return found


def test_an_output_deleted_before_its_download_is_made_again(rig: JobRig) -> None:
    job_id = submit(rig, texts=2, chunk_size=2)
    downloads = Downloader(
        rig.store, rig.settings.model_copy(update={"receiver_download_max_attempts": 1}), rig.clock
    )
    rig.runner.step()
    [first] = created(rig)
    lost = uploaded_npy(rig, 2)
    rig.clock.now += rig.standin.output_retention_seconds + 1  # the receiver was down an hour
    end(rig, {**first, "output": lost}, "succeeded", None)
    drain(downloads)  # 404: the file is dead
    rig.runner.step()  # the chunk is queued again after its backoff
    rig.clock.now += RETRY_BACKOFF_SECONDS[0]
    rig.runner.step()
    second = created(rig)[-1]
    assert second["id"] != first["id"]
    end(rig, {**second, "output": uploaded_npy(rig, 2)}, "succeeded", None)
    drain(downloads)
    rig.runner.step()
    chunk = chunk_of(rig, job_id)
    assert (chunk["state"], chunk["prediction_id"], chunk["attempts"]) == (
        "done",
        second["id"],
        2,
    )
    assert job(rig, job_id)["state"] == "completed"
    downloads.close()


def test_a_prediction_whose_end_never_comes_is_canceled_and_made_again(rig: JobRig) -> None:
    """Replicate lost it, or every webhook and reconcile of it was lost: the chunk moves on."""
    job_id = submit(rig, texts=2, chunk_size=2)
    rig.runner.step()
    [first] = created(rig)
    rig.clock.now += RUN_DEADLINE_SECONDS - 1
    rig.runner.step()
    assert (chunk_of(rig, job_id)["state"], len(created(rig))) == ("running", 1)
    rig.clock.now += 2
    rig.runner.step()  # overdue: canceled on Replicate, queued after its backoff
    assert rig.standin.predictions[first["id"]]["status"] == "canceled"
    rig.clock.now += RETRY_BACKOFF_SECONDS[0]
    rig.runner.step()
    second = created(rig)[-1]
    assert second["id"] != first["id"]
    end(rig, {**first, "output": uploaded_npy(rig, 2)}, "succeeded", None)  # late: ignored
    rig.runner.step()
    chunk = chunk_of(rig, job_id)
    assert (chunk["state"], chunk["attempts"], chunk["prediction_id"]) == (
        "running",
        2,
        second["id"],
    )


def test_a_runner_that_died_before_recording_its_prediction_finds_it_on_replicate(
    rig: JobRig,
) -> None:
    job_id = submit(rig, texts=2, chunk_size=2)
    # What a runner does up to the moment it dies: claim, create; never record nor follow.
    [claim] = died_claiming(rig)
    payload = {"input": claim.input, "webhook": rig.runner.webhook_url}
    body = rig.runner.api.create(claim.deployment, payload)
    # Not to be taken for it: on Replicate, the same texts on another deployment and this
    # deployment with other texts; a replayed signed delivery with exactly its input and
    # deployment, under an id Replicate never made.
    rig.clock.now += 1
    rig.standin.put(
        "elsewhere1",
        "starting",
        input=claim.input,
        deployment="someone/else",
        created_at=rig.standin.now_iso(),
    )
    other_input = prediction_input(["text 0", "text X"], True)
    rig.standin.put(
        "othertexts1",
        "starting",
        input=other_input,
        deployment=rig.deployment,
        created_at=rig.standin.now_iso(),
    )
    forged = {**body, "id": "forged1", "status": "succeeded", "output": "https://x.example/o.npy"}
    assert deliver(rig.url, forged, timestamp=rig.clock.now).status_code == 200

    rig.clock.now += rig.runner.claim_seconds
    rig.runner.step()
    chunk = chunk_of(rig, job_id)
    assert (chunk["state"], chunk["prediction_id"], chunk["attempts"]) == (
        "running",
        body["id"],
        1,
    )
    assert len(created(rig)) == 3  # ours and the two decoys: found, not created again
    assert read(rig.url, f"/predictions/{body['id']}").status_code == 200  # reconciled if lost


def test_a_create_answered_by_a_gateway_error_is_found_not_made_twice(rig: JobRig) -> None:
    job_id = submit(rig, texts=1, chunk_size=1)
    rig.standin.lost_answers = 1  # Replicate makes it; the answer is a 502
    rig.runner.step()
    [made] = created(rig)
    assert chunk_of(rig, job_id)["state"] == "creating"  # unknown: not made again at once
    rig.clock.now += rig.runner.claim_seconds / 2
    rig.runner.step()
    assert len(created(rig)) == 1
    rig.clock.now += rig.runner.claim_seconds
    rig.runner.step()
    chunk = chunk_of(rig, job_id)
    assert (chunk["state"], chunk["prediction_id"], chunk["attempts"]) == (
        "running",
        made["id"],
        1,
    )
    assert len(created(rig)) == 1


def test_a_create_that_never_reached_replicate_is_made_once_its_claim_runs_out(
    rig: JobRig,
) -> None:
    job_id = submit(rig, texts=1, chunk_size=1)
    rig.standin.gateway_errors = 1  # a 502 that did nothing
    rig.runner.step()
    assert created(rig) == []
    assert chunk_of(rig, job_id)["state"] == "creating"
    rig.clock.now += rig.runner.claim_seconds + 1
    rig.runner.step()  # not on Replicate's list: queued again after a backoff
    assert created(rig) == []
    rig.clock.now += RETRY_BACKOFF_SECONDS[0]
    rig.runner.step()
    [made] = created(rig)
    chunk = chunk_of(rig, job_id)
    assert (chunk["state"], chunk["prediction_id"]) == ("running", made["id"])
    assert chunk["attempts"] == 1  # a create that made nothing is not an attempt


def test_an_outage_of_replicates_create_stalls_a_job_and_never_fails_it(rig: JobRig) -> None:
    job_id = submit(rig, texts=1, chunk_size=1)
    for _ in range(rig.runner.max_attempts + 2):
        rig.standin.gateway_errors = 1  # every create answered 502, none made
        rig.runner.step()
        rig.clock.now += rig.runner.claim_seconds + 1
        rig.runner.step()  # not made: queued again, uncounted
        rig.clock.now += RETRY_BACKOFF_SECONDS[0]
    rig.runner.step()  # Replicate is back
    [made] = created(rig)
    chunk = chunk_of(rig, job_id)
    assert (chunk["state"], chunk["prediction_id"], chunk["attempts"]) == (
        "running",
        made["id"],
        1,
    )
    end(rig, made, "failed", "worker died")  # its first real failure: tried again, not failed
    rig.runner.step()
    assert chunk_of(rig, job_id)["state"] == "queued"


def test_a_chunk_no_create_of_which_comes_to_anything_fails_for_good(rig: JobRig) -> None:
    job_id = submit(rig, texts=1, chunk_size=1)
    for _ in range(MAX_LOST_CLAIMS):
        rig.standin.gateway_errors = 1
        rig.runner.step()
        rig.clock.now += rig.runner.claim_seconds + 1
        rig.runner.step()
        rig.clock.now += RETRY_BACKOFF_SECONDS[0]
    shown = job(rig, job_id)
    assert shown["state"] == "completed"
    [failed] = shown["failed_chunks"]
    assert failed["error"] == f"no prediction came of {MAX_LOST_CLAIMS} tries to create it"
    assert created(rig) == []


def test_a_prediction_an_earlier_attempt_gave_up_is_never_taken_again(rig: JobRig) -> None:
    job_id = submit(rig, texts=1, chunk_size=1)
    rig.runner.step()
    [first] = created(rig)
    end(rig, first, "failed", "worker died")
    rig.runner.step()  # queued again after its backoff
    rig.clock.now += 10
    died_claiming(rig)  # attempt 2; then it died
    rig.clock.now += rig.runner.claim_seconds + 1
    rig.runner.step()  # the first prediction has the chunk's input, and is not its own now
    assert chunk_of(rig, job_id)["state"] == "queued"
    rig.clock.now += RETRY_BACKOFF_SECONDS[0]
    rig.runner.step()
    assert len(created(rig)) == 2
    chunk = chunk_of(rig, job_id)
    assert chunk["state"] == "running"
    assert chunk["prediction_id"] == created(rig)[-1]["id"] != first["id"]


def test_stalled_chunks_wait_while_replicate_cannot_list_its_predictions(rig: JobRig) -> None:
    job_id = submit(rig, texts=1, chunk_size=1)
    died_claiming(rig)
    rig.clock.now += rig.runner.claim_seconds + 1
    rig.standin.gateway_errors = 1  # the list call answers 502 (429s the client retries)
    rig.runner.step()
    assert chunk_of(rig, job_id)["state"] == "creating"  # not guessed: waits for the list
    assert created(rig) == []
    rig.runner.step()
    assert chunk_of(rig, job_id)["state"] == "queued"
    rig.clock.now += RETRY_BACKOFF_SECONDS[0]
    rig.runner.step()
    assert chunk_of(rig, job_id)["state"] == "running"
    assert len(created(rig)) == 1


def test_a_stopped_runner_whose_prediction_never_came_is_queued_again(rig: JobRig) -> None:
    job_id = submit(rig, texts=1, chunk_size=1)
    died_claiming(rig)
    rig.clock.now += rig.runner.claim_seconds + 1
    rig.runner.step()
    rig.clock.now += RETRY_BACKOFF_SECONDS[0]
    rig.runner.step()
    chunk = read(rig.url, f"/jobs/{job_id}/chunks/0").json()
    assert (chunk["state"], chunk["attempts"]) == ("running", 1)
    assert len(created(rig)) == 1


class StallsAfterCreate:
    """Replicate's API as a runner sees it when it stalls (a pause, a slow store) between
    Replicate's answer to its create and its record of it: `meanwhile` runs in that gap."""

    def __init__(self, api: ReplicateCalls, meanwhile: Callable[[], None]) -> None:
        self.api = api
        self.meanwhile = meanwhile

    def create(self, deployment: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = self.api.create(deployment, payload)
        self.meanwhile()
        return body

    def cancel(self, prediction_id: str) -> None:
        self.api.cancel(prediction_id)

    def created_after(self, after: float) -> Iterator[dict[str, Any]]:
        return self.api.created_after(after)


def stalling_runner(rig: JobRig, meanwhile: Callable[[], None]) -> JobRunner:
    return JobRunner(
        rig.store,
        StallsAfterCreate(rig.runner.api, meanwhile),
        webhook_url=rig.runner.webhook_url,
        limit=rig.runner.limit,
        max_attempts=3,
        clock=rig.clock,
    )


def test_a_stalled_runner_leaves_alone_the_prediction_another_runner_adopted(
    rig: JobRig,
) -> None:
    job_id = submit(rig, texts=1, chunk_size=1)

    def others_recover_it() -> None:
        rig.clock.now += rig.runner.claim_seconds + 1
        rig.runner.step()  # finds the prediction on Replicate and follows it

    stalling_runner(rig, others_recover_it).step()
    [made] = created(rig)
    assert rig.standin.predictions[made["id"]]["status"] != "canceled"
    chunk = chunk_of(rig, job_id)
    assert (chunk["state"], chunk["prediction_id"]) == ("running", made["id"])


def test_a_prediction_whose_job_was_canceled_while_it_was_created_is_stopped(
    rig: JobRig,
) -> None:
    job_id = submit(rig, texts=1, chunk_size=1)

    def cancel_job() -> None:
        assert httpx.post(f"{rig.url}/jobs/{job_id}/cancel", headers=AUTH).status_code == 200

    stalling_runner(rig, cancel_job).step()
    [made] = created(rig)
    assert rig.standin.predictions[made["id"]]["status"] == "canceled"
    assert chunk_of(rig, job_id)["state"] == "canceled"
    assert rig.store.jobs.followed([made["id"]]) == {made["id"]}  # never to be adopted


def test_a_runner_whose_claim_ran_out_cannot_act_on_the_next_claim(rig: JobRig) -> None:
    """A claim that made nothing gives its attempt number back; the runner that held it, slow
    but alive, must not renew, follow or put back the next claim under that number."""
    job_id = submit(rig, texts=1, chunk_size=1)
    [stale] = died_claiming(rig)
    rig.clock.now += rig.runner.claim_seconds + 1
    rig.runner.step()  # nothing on Replicate: queued again, uncounted
    rig.clock.now += RETRY_BACKOFF_SECONDS[0]
    [fresh] = died_claiming(rig)  # another runner's claim, about to create
    assert fresh.attempt == stale.attempt
    assert rig.store.jobs.renew(stale, rig.clock.now, rig.clock.now + 60) is False
    assert rig.store.jobs.put_back(stale, rig.clock.now, lost=False) is False
    assert rig.store.jobs.follow(stale, "made-by-the-stale-runner") is Follow.NOT_OURS
    assert rig.store.jobs.renew(fresh, rig.clock.now, rig.clock.now + 60) is True
    chunk = chunk_of(rig, job_id)
    assert (chunk["state"], chunk["attempts"], chunk["prediction_id"]) == (
        "creating",
        fresh.attempt,
        None,
    )


def test_a_claim_whose_lease_ran_out_is_not_created_even_if_no_one_took_it(rig: JobRig) -> None:
    """A runner slow through its batch: a recovering runner may be listing Replicate for the
    chunk already, and would queue it again while this one creates it."""
    submit(rig, texts=1, chunk_size=1)
    [claim] = died_claiming(rig)
    rig.clock.now += rig.runner.claim_seconds + 1
    assert rig.store.jobs.renew(claim, rig.clock.now, rig.clock.now + 60) is False


def test_no_deployment_gets_more_chunks_in_flight_than_its_cap(rig: JobRig) -> None:
    """What Replicate's instances cannot take would wait in its queue past a prediction's
    hour: the runner keeps the rest queued at home."""
    job_id = submit(rig, texts=8, chunk_size=1)
    capped = JobRunner(
        rig.store,
        rig.runner.api,
        webhook_url=rig.runner.webhook_url,
        limit=rig.runner.limit,
        max_attempts=3,
        max_in_flight=3,
        clock=rig.clock,
    )
    capped.step()
    assert len(created(rig)) == 3
    rig.clock.now += 60
    capped.step()
    assert len(created(rig)) == 3  # none has ended
    end(rig, {**created(rig)[0], "output": uploaded_npy(rig, 1)}, "succeeded", None)
    end(rig, created(rig)[1], "failed", "worker died")
    capped.step()  # one's file still downloading: in flight; one queued again: one slot
    assert len(created(rig)) == 4
    assert job(rig, job_id)["chunk_states"]["queued"] == 5


def test_a_429_storm_from_replicates_own_limit_ends_with_each_chunk_created_once(
    rig: JobRig,
) -> None:
    """The receiver's limit set above Replicate's (as when another client shares the
    account): Replicate's 429s and their resets pace it, and nothing is created twice."""
    rig.standin.creations_per_minute = 4
    job_id = submit(rig, texts=10, chunk_size=1)
    rig.runner.step()
    assert len(created(rig)) == 4  # the fifth call met 429: the rest wait for its reset
    rig.runner.step()
    assert len(created(rig)) == 4
    minutes = 0
    while len(created(rig)) < 10 and minutes < 10:
        before = len(created(rig))
        rig.clock.now += 61
        rig.runner.step()
        assert 1 <= len(created(rig)) - before <= 4  # progress, never past Replicate's limit
        minutes += 1
    chunks = [read(rig.url, f"/jobs/{job_id}/chunks/{n}").json() for n in range(10)]
    assert {c["state"] for c in chunks} == {"running"}
    assert [c["attempts"] for c in chunks] == [1] * 10  # a throttled call is not an attempt
    followed = {c["prediction_id"] for c in chunks}
    assert followed == set(rig.standin.predictions)  # ten predictions, one for each chunk
