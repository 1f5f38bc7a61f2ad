"""The verifier against the official Standard Webhooks vectors, and every way to be malformed."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.signature import VerificationError, decode_secret, sign, verify
from tests.support import DATA

VECTORS_FILE = DATA / "standard_webhooks_vectors.json"
VECTORS = json.loads(VECTORS_FILE.read_text())
KEY = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
BODY = b'{"id": "p1", "status": "succeeded"}'
NOW = 1_700_000_000


def payload(vector: dict[str, Any]) -> bytes:
    if vector.get("payload_repeat"):
        repeat = vector["payload_repeat"]
        return (repeat["char"] * repeat["count"]).encode()
    return str(vector["payload"]).encode()


def key_of(vector: dict[str, Any]) -> bytes:
    secret = vector["secret"]
    return base64.b64decode(secret.removeprefix("whsec_"))


def headers(
    msg_id: str = "msg_1",
    timestamp: int | str = NOW,
    signature: str | None = None,
    key: bytes = KEY,
    body: bytes = BODY,
) -> dict[str, str]:
    signature = signature if signature is not None else sign(key, msg_id, str(timestamp), body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


@pytest.mark.parametrize("vector", VECTORS, ids=[v["note"][:50] for v in VECTORS])
def test_official_vectors(vector: dict[str, Any]) -> None:
    hdrs = {
        "webhook-id": vector["msg_id"],
        "webhook-timestamp": str(vector["timestamp"]),
        "webhook-signature": vector["signature"],
    }
    # Only v1 (HMAC) counts: Replicate signs with v1, so the asymmetric v1a vector is refused.
    expected = vector["valid"] and "v1a," not in vector["signature"]
    try:
        verify([key_of(vector)], hdrs, payload(vector), now=vector["timestamp"], tolerance=300)
        verified = True
    except VerificationError:
        verified = False
    assert verified is expected


def test_signing_reproduces_the_canonical_vector() -> None:
    v = VECTORS[0]
    assert sign(key_of(v), v["msg_id"], str(v["timestamp"]), payload(v)) == v["signature"]


def test_returns_the_webhook_id() -> None:
    assert verify([KEY], headers(msg_id="msg_abc"), BODY, now=NOW, tolerance=300) == "msg_abc"


def test_any_configured_key_verifies_for_rotation() -> None:
    old = b"o" * 32
    new = b"n" * 32
    assert verify([old, new], headers(key=new), BODY, now=NOW, tolerance=300)
    with pytest.raises(VerificationError, match="signature_mismatch"):
        verify([old], headers(key=new), BODY, now=NOW, tolerance=300)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"webhook-id": ""}, "missing_headers"),
        ({"webhook-timestamp": ""}, "missing_headers"),
        ({"webhook-signature": ""}, "missing_headers"),
        ({"webhook-id": "has space"}, "malformed_id"),
        ({"webhook-id": "x" * 256}, "malformed_id"),
        ({"webhook-timestamp": "1700000000.0"}, "malformed_timestamp"),
        ({"webhook-timestamp": "-1700000000"}, "malformed_timestamp"),
        ({"webhook-timestamp": " 1700000000"}, "malformed_timestamp"),
        ({"webhook-timestamp": "1e9"}, "malformed_timestamp"),
        ({"webhook-timestamp": "9" * 40}, "malformed_timestamp"),
        ({"webhook-timestamp": str(NOW - 301)}, "timestamp_too_old"),
        ({"webhook-timestamp": str(NOW + 301)}, "timestamp_in_future"),
        ({"webhook-signature": "v2,abc v1a,xyz"}, "no_v1_signature"),
        ({"webhook-signature": "v1,@@@@ v1,==== v1"}, "no_v1_signature"),
        ({"webhook-signature": "v1," + base64.b64encode(b"x" * 31).decode()}, "no_v1_signature"),
        ({"webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()}, "signature_mismatch"),
    ],
)
def test_malformed_or_forged_is_refused_with_a_reason(change: dict[str, str], reason: str) -> None:
    hdrs = {**headers(), **change}
    with pytest.raises(VerificationError) as raised:
        verify([KEY], hdrs, BODY, now=NOW, tolerance=300)
    assert raised.value.reason == reason


def test_tolerance_edges_are_inclusive() -> None:
    for ts in (NOW - 300, NOW + 300):
        verify([KEY], headers(timestamp=ts), BODY, now=NOW, tolerance=300)


def test_body_is_verified_byte_for_byte() -> None:
    with pytest.raises(VerificationError, match="signature_mismatch"):
        verify([KEY], headers(), BODY + b" ", now=NOW, tolerance=300)


def test_signature_for_another_id_or_timestamp_is_refused() -> None:
    stolen = sign(KEY, "msg_other", str(NOW), BODY)
    with pytest.raises(VerificationError, match="signature_mismatch"):
        verify([KEY], headers(signature=stolen), BODY, now=NOW, tolerance=300)
    earlier = sign(KEY, "msg_1", str(NOW - 1), BODY)
    with pytest.raises(VerificationError, match="signature_mismatch"):
        verify([KEY], headers(signature=earlier), BODY, now=NOW, tolerance=300)


@pytest.mark.parametrize(
    "secret",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
        "whsec_",  # the replicate client turns this into an empty key
        "whsec_@@@@",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",  # not a multiple of 4
        "whsec_" + base64.b64encode(b"k" * 23).decode(),  # too short
        "whsec_" + base64.b64encode(b"k" * 65).decode(),  # too long
        "whsec_MfKQ9r8GKYqrTwjU PD8ILPZIo2LaLaSw",
    ],
)
def test_weak_or_malformed_secrets_are_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="webhook secret"):
        decode_secret(secret)


@given(
    msg_id=st.text(max_size=300),
    timestamp=st.text(max_size=30),
    signature=st.text(max_size=400),
    body=st.binary(max_size=200),
)
def test_arbitrary_headers_never_raise_anything_but_a_verification_error(
    msg_id: str, timestamp: str, signature: str, body: bytes
) -> None:
    hdrs = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
    with pytest.raises(VerificationError) as raised:
        verify([KEY], hdrs, body, now=NOW, tolerance=300)
    assert raised.value.reason
