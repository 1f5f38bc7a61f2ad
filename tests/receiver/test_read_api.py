"""The read API: bearer token, one prediction, listing with filters and pages, stored files."""

from __future__ import annotations

import httpx
import pytest

from tests.support.live import LiveReceiver
from tests.support.receiving import deliver, prediction, read


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"authorization": "Bearer wrong"}, 403), ({"authorization": "Basic x"}, 401)],
)
def test_token_required(receiver: LiveReceiver, headers: dict[str, str], status: int) -> None:
    url = receiver.url
    for path in ("/predictions", "/predictions/x", "/predictions/x/files/0"):
        response = httpx.get(f"{url}{path}", headers=headers)
        assert response.status_code == status
        assert response.json()["error"]


def test_listing_filters_and_pages(receiver: LiveReceiver) -> None:
    url = receiver.url
    clock = receiver.clock
    for i in range(5):
        clock.now += 1
        deliver(url, prediction(f"L{i}", "succeeded" if i % 2 else "processing"))
    page = read(url, "/predictions?limit=2").json()
    ids = [p["id"] for p in page["items"]]
    while page["next"]:
        page = read(url, f"/predictions?limit=2&cursor={page['next']}").json()
        ids += [p["id"] for p in page["items"]]
    assert ids == ["L4", "L3", "L2", "L1", "L0"]
    done = read(url, "/predictions?status=succeeded").json()["items"]
    assert [p["id"] for p in done] == ["L3", "L1"]


def test_bad_paging_is_a_4xx(receiver: LiveReceiver) -> None:
    url = receiver.url
    assert read(url, "/predictions?cursor=!!!").status_code == 400
    assert read(url, "/predictions?limit=0").status_code == 422
    assert read(url, "/predictions/none").status_code == 404
    assert read(url, "/predictions/none/files/0").status_code == 404
    assert read(url, "/predictions/none/files/x").status_code == 422


def test_file_not_yet_stored_is_409(receiver: LiveReceiver) -> None:
    url = receiver.url
    deliver(url, prediction("F1", "succeeded", output="https://replicate.delivery/a/out.npy"))
    response = read(url, "/predictions/F1/files/0")
    assert response.status_code == 409
    assert "queued" in response.json()["error"]


def test_prediction_lists_each_delivery_once_with_its_arrival(receiver: LiveReceiver) -> None:
    """A replay adds no row: it is counted on the first one, with the time of the last."""
    url = receiver.url
    clock = receiver.clock
    clock.now = 1_763_884_800.25  # 2025-11-23T08:00:00.250Z
    deliver(url, prediction("T1", "processing"), msg_id="msg_t", timestamp=clock.now)
    clock.now += 2
    deliver(url, prediction("T1", "processing"), msg_id="msg_t", timestamp=clock.now)
    clock.now += 3
    deliver(url, prediction("T1", "processing"), msg_id="msg_t", timestamp=clock.now)
    state = read(url, "/predictions/T1").json()
    assert state["deliveries"] == [
        {
            "webhook_id": "msg_t",
            "status": "processing",
            "source": "webhook",
            "received_at": "2025-11-23T08:00:00.250+00:00",
            "applied": True,
            "replays": 2,
            "last_replay_at": "2025-11-23T08:00:05.250+00:00",
        }
    ]
    listed = read(url, "/predictions").json()["items"]
    assert listed[0]["created_at"] == "2025-11-23T08:00:00.250+00:00"


def test_outside_the_console_errors_keep_their_json_shapes(receiver: LiveReceiver) -> None:
    """The console answers refusals with pages; the API, the webhook and the rest still answer
    in JSON, as their clients parse them."""
    assert httpx.get(f"{receiver.url}/nope").json() == {"detail": "Not Found"}
    wrong_method = httpx.get(f"{receiver.url}/webhooks/replicate")
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"detail": "Method Not Allowed"}
    invalid = read(receiver.url, "/predictions?limit=0")
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["query", "limit"]
    assert read(receiver.url, "/predictions/none").json() == {"error": "no such prediction"}
