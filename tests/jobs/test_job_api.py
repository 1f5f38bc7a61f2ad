"""The jobs API: an upload is checked whole before anything can run, behind the read token."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx

from localcog.polling import poll
from receiver.jobs.items import Chunk, Item
from receiver.jobs.runner import UPLOAD_IDLE_SECONDS
from tests.support.jobs import JobRig
from tests.support.receiving import READ_TOKEN, read

AUTH = {"authorization": f"Bearer {READ_TOKEN}"}


def jsonl(*items: tuple[str, object]) -> bytes:
    return b"".join(json.dumps({"id": i, "text": t}).encode() + b"\n" for i, t in items)


def post_job(rig: JobRig, body: bytes | Iterator[bytes], **params: object) -> httpx.Response:
    query = {"deployment": rig.deployment, **params}
    return httpx.post(f"{rig.url}/jobs", params=query, content=body, headers=AUTH, timeout=30)


def test_an_upload_is_stored_in_chunks_and_shown_with_its_progress(rig: JobRig) -> None:
    body = jsonl(*[(f"id{i}", f"text {i}") for i in range(10)])
    created = post_job(rig, body, chunk_size=4)
    assert created.status_code == 201, created.text
    job = created.json()
    assert (job["texts"], job["chunks"]) == (10, 3)
    shown = read(rig.url, f"/jobs/{job['id']}").json()
    assert shown["state"] == "running"
    assert shown["chunk_states"] == {"queued": 3}
    assert (shown["done_texts"], shown["failed_texts"], shown["eta_seconds"]) == (0, 0, None)
    chunk = read(rig.url, f"/jobs/{job['id']}/chunks/2").json()
    assert (chunk["first"], chunk["count"], chunk["ids"]) == (8, 2, ["id8", "id9"])
    not_done = read(rig.url, f"/jobs/{job['id']}/chunks/2/vectors")
    assert not_done.status_code == 409
    assert [j["id"] for j in read(rig.url, "/jobs").json()["items"]] == [job["id"]]


def test_a_bad_line_refuses_the_whole_upload_and_leaves_nothing(rig: JobRig) -> None:
    good = jsonl(*[(f"id{i}", "text") for i in range(9)])
    for body, reason in [
        (good + b'{"id": "id3", "text": "again"}\n', "line 10: duplicate id 'id3'"),
        (good + b'{"id": "x", "text": ["a"]}\n', "line 10: text must be a string, not list"),
        (good + b"{not json\n", "line 10: not JSON"),
        (b"", "line 1: the input is empty"),
    ]:
        refused = post_job(rig, body, chunk_size=2)  # chunks 1-4 were stored before line 10
        assert refused.status_code == 422
        assert refused.json()["error"].startswith(reason)
    assert read(rig.url, "/jobs").json()["items"] == []
    assert rig.runner.step() is False
    assert rig.standin.predictions == {}


def test_refusals_say_why(rig: JobRig) -> None:
    body = jsonl(("a", "text"))
    no_token = httpx.post(f"{rig.url}/jobs", params={"deployment": rig.deployment}, content=body)
    assert no_token.status_code == 401
    assert post_job(rig, body, deployment="not a deployment").status_code == 422
    unknown = post_job(rig, body, deployment="local/nope")
    assert unknown.status_code == 422
    assert unknown.json()["error"] == "Replicate has no deployment local/nope for this token"
    assert post_job(rig, body, chunk_size=1025).status_code == 422
    large = jsonl(*[(str(i), "x" * 1000) for i in range(80)])  # over the 64 KiB set here
    declared = post_job(rig, large)
    streamed = post_job(rig, iter([large[:40_000], large[40_000:]]))  # chunked: no length
    for too_big in (declared, streamed):
        assert too_big.status_code == 413
        assert "RECEIVER_MAX_JOB_BYTES" in too_big.json()["error"]
    assert read(rig.url, "/jobs/job_0123456789abcdef").status_code == 404
    assert read(rig.url, "/jobs/job_%00").status_code == 404
    assert read(rig.url, "/jobs").json()["items"] == []


def test_cancel_stops_queued_and_running_chunks(rig: JobRig) -> None:
    job = post_job(rig, jsonl(*[(str(i), "t") for i in range(30)]), chunk_size=2).json()
    assert rig.runner.step() is True  # the burst: 10 of 15 chunks created
    running = [p for p in rig.standin.predictions.values() if p["status"] == "starting"]
    assert len(running) == 10
    canceled = httpx.post(f"{rig.url}/jobs/{job['id']}/cancel", headers=AUTH).json()
    assert canceled["state"] == "canceled"
    assert canceled["chunk_states"] == {"canceled": 15}
    assert (canceled["canceled_texts"], canceled["failed_texts"]) == (30, 0)
    assert {p["status"] for p in rig.standin.predictions.values()} == {"canceled"}
    rig.clock.now += 60
    assert rig.runner.step() is False  # nothing more is created
    assert len(rig.standin.predictions) == 10


def test_a_job_canceled_while_it_uploads_is_refused_and_leaves_nothing(rig: JobRig) -> None:
    def body() -> Iterator[bytes]:
        yield jsonl(("a", "first"))
        uploading = poll(
            lambda: httpx.get(f"{rig.url}/jobs", headers=AUTH).json()["items"] or None,
            timeout=10,
            interval=0.05,
            what="the job being uploaded is listed",
        )
        [job] = uploading
        assert job["state"] == "uploading"
        assert httpx.post(f"{rig.url}/jobs/{job['id']}/cancel", headers=AUTH).status_code == 200
        yield jsonl(("b", "second"))

    refused = post_job(rig, body())
    assert refused.status_code == 409
    assert "no longer uploading" in refused.json()["error"]
    assert httpx.get(f"{rig.url}/jobs", headers=AUTH).json()["items"] == []


def test_an_upload_whose_process_died_is_swept_and_a_live_one_is_not(rig: JobRig) -> None:
    """What a receiver killed half way through an upload leaves: a job `uploading` forever."""
    dead = "job_00000000000000de"
    slow = "job_0000000000000051"
    jobs = rig.store.jobs
    jobs.create(dead, rig.deployment, True, rig.clock.now)
    jobs.add_chunks(dead, True, [Chunk(0, 0, [Item("a", "text")])], rig.clock.now)
    rig.clock.now += UPLOAD_IDLE_SECONDS - 60
    jobs.create(slow, rig.deployment, True, rig.clock.now)  # still coming in
    assert read(rig.url, f"/jobs/{dead}").json()["state"] == "uploading"
    rig.clock.now += 61
    rig.runner.step()
    assert read(rig.url, f"/jobs/{dead}").status_code == 404
    assert read(rig.url, f"/jobs/{dead}/chunks/0").status_code == 404
    assert read(rig.url, f"/jobs/{slow}").json()["state"] == "uploading"
    assert rig.standin.predictions == {}


def test_a_slow_upload_is_not_taken_for_a_dead_one(rig: JobRig) -> None:
    """Lines keep coming, too few to store a chunk batch: the upload says it is alive."""

    def body() -> Iterator[bytes]:
        yield jsonl(("a", "first"))
        [job] = poll(
            lambda: httpx.get(f"{rig.url}/jobs", headers=AUTH).json()["items"] or None,
            timeout=10,
            interval=0.05,
            what="the job being uploaded is listed",
        )
        rig.clock.now += UPLOAD_IDLE_SECONDS - 100
        yield jsonl(("b", "second"))
        poll(
            lambda: (
                rig.store.jobs.job(job["id"], rig.clock.now)["updated_at"] == rig.clock.now or None
            ),
            timeout=10,
            interval=0.05,
            what="the upload touched its job",
        )
        rig.clock.now += 200  # idle long since the upload began, not since its last line
        rig.runner.step()
        yield jsonl(("c", "third"))

    response = post_job(rig, body())
    assert response.status_code == 201, response.text
    assert response.json()["texts"] == 3
