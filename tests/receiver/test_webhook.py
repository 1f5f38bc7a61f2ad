"""POST /webhooks/replicate on a live receiver, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support.live import LiveReceiver
from tests.support.receiving import deliver, prediction, read, signed


def test_a_delivery_is_applied_and_acknowledged(receiver: LiveReceiver) -> None:
    url = receiver.url
    response = deliver(url, prediction("p1", "starting"), msg_id="msg_a")
    assert response.status_code == 200
    assert response.json() == {"status": "accepted", "webhook_id": "msg_a"}
    state = read(url, "/predictions/p1").json()
    assert state["status"] == "starting"
    assert state["input"] == {"texts": ["hello"]}  # Replicate's field names at the top level
    assert [d["webhook_id"] for d in state["deliveries"]] == ["msg_a"]


def test_a_replayed_webhook_id_is_acknowledged_once(receiver: LiveReceiver) -> None:
    url = receiver.url
    first = deliver(url, prediction("p1", "processing", logs="one"), msg_id="msg_same")
    again = deliver(url, prediction("p1", "processing", logs="one two"), msg_id="msg_same")
    assert first.json()["status"] == "accepted"
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    state = read(url, "/predictions/p1").json()
    assert state["logs"] == "one"  # the replay was not applied
    assert len(state["deliveries"]) == 1


def test_terminal_state_is_final_and_late_events_do_not_regress(receiver: LiveReceiver) -> None:
    url = receiver.url
    clock = receiver.clock
    out = [[0.1, 0.2]]
    for body in [
        prediction("p2", "succeeded", output=out, logs="a\nb\nc"),
        prediction("p2", "processing", output=None, logs="a"),
        prediction("p2", "starting"),
        prediction("p2", "failed", error="late and wrong"),
    ]:
        clock.now += 1
        assert deliver(url, body, timestamp=clock.now).json()["status"] == "accepted"
    state = read(url, "/predictions/p2").json()
    assert (state["status"], state["output"], state["logs"], state["error"]) == (
        "succeeded",
        out,
        "a\nb\nc",
        None,
    )
    assert [d["status"] for d in state["deliveries"]] == [
        "succeeded",
        "processing",
        "starting",
        "failed",
    ]
    # Kept for the record, each marked as not applied: the prediction had already ended.
    assert [d["applied"] for d in state["deliveries"]] == [True, False, False, False]


def test_non_terminal_events_never_shorten_output_or_logs(receiver: LiveReceiver) -> None:
    url = receiver.url
    deliver(url, prediction("p3", "processing", output=[1, 2, 3], logs="l1\nl2"))
    deliver(url, prediction("p3", "starting", output=[1], logs="l1"))
    state = read(url, "/predictions/p3").json()
    assert (state["status"], state["output"], state["logs"]) == ("processing", [1, 2, 3], "l1\nl2")


def test_the_small_cog_shape_is_accepted(receiver: LiveReceiver) -> None:
    url = receiver.url
    body = {
        "id": "cog1",
        "status": "succeeded",
        "output": [[1.0]],
        "logs": "",
        "error": None,
        "metrics": {"predict_time": 0.1},
    }
    assert deliver(url, body).status_code == 200
    assert read(url, "/predictions/cog1").json()["metrics"] == {"predict_time": 0.1}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "body is not JSON"),
        (b"[1, 2]", "body is not a JSON object"),
        (b'{"status": "succeeded"}', "body has no prediction id"),
        (b'{"id": 7, "status": "succeeded"}', "body has no prediction id"),
        (b'{"id": "", "status": "succeeded"}', "body has no prediction id"),
        (json.dumps({"id": "x" * 256}).encode(), "body has no prediction id"),
        (b'{"id": "p", "status": 3}', "status is not a short printable string"),
        (b'{"id": "p\\u0000", "status": "starting"}', "body has no prediction id"),
        (b'{"id": "a/b", "status": "starting"}', "no '/'"),  # one path segment in every URL
        (b'{"id": "p", "status": "x\\u0000"}', "status is not a short printable string"),
        (b"[" * 20_000 + b"]" * 20_000, "body is not JSON"),  # deeper than any parser recursion
    ],
)
def test_signed_but_unusable_bodies_are_400(
    receiver: LiveReceiver, body: bytes, reason: str
) -> None:
    url = receiver.url
    response = deliver(url, body)
    assert response.status_code == 400
    assert reason in response.json()["error"]


def test_forged_delivery_is_401_without_echoing_the_expected_signature(
    receiver: LiveReceiver,
) -> None:
    url = receiver.url
    raw, headers = signed(prediction("p4", "succeeded"))
    genuine = headers["webhook-signature"]
    headers["webhook-signature"] = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    response = httpx.post(f"{url}/webhooks/replicate", content=raw, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "signature verification failed: signature_mismatch"}
    assert genuine.split(",")[1] not in response.text
    assert read(url, "/predictions/p4").status_code == 404  # nothing was stored


def test_timestamp_checked_against_the_receivers_clock(receiver: LiveReceiver) -> None:
    url = receiver.url
    clock = receiver.clock
    clock.now += 301  # the sender's clock is now 301 s behind ours
    response = deliver(url, prediction("p5", "succeeded"))
    assert response.status_code == 401
    assert "timestamp_too_old" in response.json()["error"]


def test_missing_headers_are_401(receiver: LiveReceiver) -> None:
    url = receiver.url
    response = httpx.post(f"{url}/webhooks/replicate", json=prediction("p6", "succeeded"))
    assert response.status_code == 401
    assert "missing_headers" in response.json()["error"]


def test_oversized_body_is_413_declared_or_streamed(receiver: LiveReceiver) -> None:
    url = receiver.url
    big = json.dumps(prediction("p7", "succeeded", logs="x" * 70_000)).encode()
    raw, headers = signed(big)
    assert httpx.post(f"{url}/webhooks/replicate", content=raw, headers=headers).status_code == 413

    def chunks() -> Any:  # no Content-Length: chunked transfer encoding
        yield raw[:40_000]
        yield raw[40_000:]

    response = httpx.post(f"{url}/webhooks/replicate", content=chunks(), headers=headers)
    assert response.status_code == 413
    assert "body over 65536 bytes" in response.json()["error"]


def test_exact_path_only_no_redirects(receiver: LiveReceiver) -> None:
    url = receiver.url
    raw, headers = signed(prediction("p8", "succeeded"))
    slash = httpx.post(f"{url}/webhooks/replicate/", content=raw, headers=headers)
    assert slash.status_code == 404
    assert "location" not in slash.headers
    assert httpx.get(f"{url}/webhooks/replicate").status_code == 405


def test_terminal_output_files_are_queued_or_refused_by_host(receiver: LiveReceiver) -> None:
    url = receiver.url
    output = [
        "https://replicate.delivery/abc/embeddings.npy",
        "https://evil.example/x.npy",
        "data:application/octet-stream;base64,AAEC",
        "plain text",
    ]
    deliver(url, prediction("p9", "succeeded", output=output))
    files = read(url, "/predictions/p9").json()["files"]
    assert [(f["n"], f["state"]) for f in files] == [(0, "queued"), (1, "refused"), (2, "queued")]
    assert files[1]["last_error"] == "host not in RECEIVER_DOWNLOAD_HOSTS"


def test_metrics_count_outcomes_and_failure_reasons(receiver: LiveReceiver) -> None:
    url = receiver.url
    deliver(url, prediction("m1", "succeeded"), msg_id="msg_m")
    deliver(url, prediction("m1", "succeeded"), msg_id="msg_m")
    httpx.post(f"{url}/webhooks/replicate", json={"id": "m2"})
    text = httpx.get(f"{url}/metrics").text
    assert 'receiver_deliveries_total{outcome="accepted"} 1.0' in text
    assert 'receiver_deliveries_total{outcome="duplicate"} 1.0' in text
    assert 'receiver_verification_failures_total{reason="missing_headers"} 1.0' in text
    assert "receiver_download_queue_depth 0.0" in text
    assert "receiver_webhook_seconds_bucket" in text


def test_healthz(receiver: LiveReceiver) -> None:
    url = receiver.url
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok", "store": "ok", "writer": "ok"}
