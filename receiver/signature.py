"""Standard Webhooks verification, as Replicate signs its webhooks.

signature = base64(HMAC-SHA256(key, f"{webhook-id}.{webhook-timestamp}.{raw body}")), where key is
the base64 decoding of the text after `whsec_`. Stricter than the reference libraries: a secret
must be `whsec_` + strict base64 of 24-64 bytes (an empty or garbled key would verify anything);
only `v1` entries count; a malformed entry is skipped, never raised; the timestamp must be plain
digits within the tolerance both ways; every configured key (rotation) is tried in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PREFIX = "whsec_"
SECRET_BYTES = 32  # Replicate's own secrets decode to 24 bytes; ours accept 24-64
_ID = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces: it becomes a primary key
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class VerificationError(Exception):
    """Why a delivery was refused; `reason` is a short label safe to return and count."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_secret(secret: str) -> bytes:
    """The HMAC key inside `whsec_<base64>`; ValueError if the secret is not exactly that."""
    if not secret.startswith(PREFIX):
        raise ValueError("a webhook secret must start with whsec_")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except binascii.Error as exc:
        raise ValueError("a webhook secret must be whsec_ followed by strict base64") from exc
    if not 24 <= len(key) <= 64:
        raise ValueError(f"a webhook secret must decode to 24-64 bytes, not {len(key)}")
    return key


def generate_secret() -> str:
    """A fresh secret for a receiver that is not fed by Replicate's account secret (local use,
    or a test sender): random bytes, strict base64, as `decode_secret` requires."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def sign(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    content = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.digest(key, content, hashlib.sha256)).decode()


def signed_headers(key: bytes, msg_id: str, timestamp: str, body: bytes) -> dict[str, str]:
    """The headers a sender attaches to `body`: what `python -m receiver send-test` and the
    tests send. (The stand-in signs with the `standardwebhooks` library instead, so that an
    independent implementation checks this one.)"""
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": sign(key, msg_id, timestamp, body),
    }


def _v1_macs(header: str) -> list[bytes]:
    """Every well-formed v1 MAC in a `webhook-signature` header; anything else is skipped."""
    macs = []
    for entry in header.split(" "):
        version, _, value = entry.partition(",")
        if version != "v1":
            continue
        try:
            mac = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(mac) == hashlib.sha256().digest_size:
            macs.append(mac)
    return macs


@dataclass(frozen=True)
class Claim:
    """What a delivery's headers claim, well-formed and on time: checked before any body is
    read, so a sender without them holds no memory and no time."""

    msg_id: str
    timestamp: str
    macs: list[bytes]


def check_headers(headers: Mapping[str, str], now: float, tolerance: int) -> Claim:
    """The claim of well-formed, timely headers; raise VerificationError otherwise."""
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    header = headers.get("webhook-signature", "")
    if not (msg_id and timestamp and header):
        raise VerificationError("missing_headers")
    if not _ID.fullmatch(msg_id):
        raise VerificationError("malformed_id")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise VerificationError("malformed_timestamp")
    if int(timestamp) < now - tolerance:
        raise VerificationError("timestamp_too_old")
    if int(timestamp) > now + tolerance:
        raise VerificationError("timestamp_in_future")
    macs = _v1_macs(header)
    if not macs:
        raise VerificationError("no_v1_signature")
    return Claim(msg_id, timestamp, macs)


def check_body(keys: Sequence[bytes], claim: Claim, body: bytes) -> str:
    """Return the webhook-id if one of the claimed MACs is `body`'s under one of `keys`."""
    content = f"{claim.msg_id}.{claim.timestamp}.".encode() + body
    expected = [hmac.digest(key, content, hashlib.sha256) for key in keys]
    # Compare every pair: the time taken does not depend on which one matched.
    matched = False
    for mac in claim.macs:
        for want in expected:
            matched |= hmac.compare_digest(mac, want)
    if not matched:
        raise VerificationError("signature_mismatch")
    return claim.msg_id


def verify(
    keys: Sequence[bytes], headers: Mapping[str, str], body: bytes, now: float, tolerance: int
) -> str:
    """Return the webhook-id of a genuine delivery; raise VerificationError otherwise."""
    return check_body(keys, check_headers(headers, now, tolerance), body)
