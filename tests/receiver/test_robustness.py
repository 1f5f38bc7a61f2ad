"""No input, however malformed, gets a 5xx; an unavailable store gets a 503 so Replicate retries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localcog.loopback import serve_in_thread
from receiver.app import create_app
from receiver.db import make_engine
from receiver.settings import Settings, signing_keys
from receiver.store import Store
from tests.support.live import LiveReceiver
from tests.support.receiving import SECRET, prediction, signed

FUZZ = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "id": st.text(min_size=1, max_size=40),
            "status": st.sampled_from(
                ["starting", "processing", "succeeded", "failed", "canceled", "aborted", "weird"]
            ),
        },
        optional={"output": json_values, "logs": st.text(max_size=50), "error": json_values},
    ).map(lambda v: json.dumps(v).encode()),
)
# What a client can send: h11 refuses header values with leading or trailing whitespace.
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(
    str.strip
)


@FUZZ
@given(body=bodies)
def test_any_signed_body_is_2xx_or_400(receiver: LiveReceiver, body: bytes) -> None:
    url = receiver.url
    raw, headers = signed(body)
    response = httpx.post(f"{url}/webhooks/replicate", content=raw, headers=headers)
    assert response.status_code in (200, 400), response.text
    assert response.headers["content-type"] == "application/json"


@FUZZ
@given(body=bodies, msg_id=header_text, timestamp=header_text, signature=header_text)
def test_any_unsigned_delivery_is_401(
    receiver: LiveReceiver, body: bytes, msg_id: str, timestamp: str, signature: str
) -> None:
    url = receiver.url
    headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
    response = httpx.post(f"{url}/webhooks/replicate", content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"].startswith("signature verification failed")


@FUZZ
@given(
    path=st.text(
        st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="?#"), max_size=40
    )
)
def test_read_api_paths_never_5xx(receiver: LiveReceiver, path: str) -> None:
    url = receiver.url
    for p in (f"/predictions/{path}", f"/predictions/{path}/files/{path}"):
        response = httpx.get(f"{url}{p}", headers={"authorization": "Bearer read-token-for-tests"})
        assert response.status_code < 500


@pytest.fixture
def receiver_without_store(tmp_path: Any) -> Iterator[str]:
    """A receiver whose PostgreSQL cannot be reached (nothing listens on port 1)."""
    settings = Settings(replicate_webhook_secret=SECRET, receiver_output_dir=tmp_path)
    engine = make_engine("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")
    store = Store(engine, settings.receiver_download_hosts)
    with serve_in_thread(create_app(settings, signing_keys(settings.secrets()), store)) as url:
        yield url


def test_store_down_is_503_so_the_sender_retries(receiver_without_store: str) -> None:
    raw, headers = signed(prediction("d1", "succeeded"))
    response = httpx.post(
        f"{receiver_without_store}/webhooks/replicate", content=raw, headers=headers
    )
    assert response.status_code == 503
    assert response.json() == {"error": "store unavailable, retry later"}
    assert httpx.get(f"{receiver_without_store}/healthz").status_code == 503
    # Verification still comes first: a forged delivery is 401 even while the store is down.
    headers["webhook-signature"] = "v1,AAAA"
    forged = httpx.post(
        f"{receiver_without_store}/webhooks/replicate", content=raw, headers=headers
    )
    assert forged.status_code == 401
