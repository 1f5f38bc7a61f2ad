"""`make smoke`'s wait on the receiver ends at once, with the reason, when the receiver will not
answer this token: a wrong one, or an address held off after wrong tokens."""

from __future__ import annotations

import time

import httpx
import pytest

from receiver.wrong_tokens import MAX_FAILURES
from ship.api import ShipError
from ship.smoke import wait_for_terminal_state
from tests.support.live import LiveReceiver
from tests.support.receiving import READ_TOKEN, deliver, prediction

PATIENCE = 60.0  # far longer than any answer below may take


def test_a_wrong_token_fails_at_once(receiver: LiveReceiver) -> None:
    started = time.monotonic()
    with pytest.raises(ShipError, match=r"refused RECEIVER_API_TOKEN \(403\)"):
        wait_for_terminal_state(receiver.url, "wrong", "p1", started + PATIENCE)
    assert time.monotonic() - started < PATIENCE / 2


def test_an_address_held_off_fails_at_once_with_when_to_retry(receiver: LiveReceiver) -> None:
    deliver(receiver.url, prediction("p1", "succeeded"))
    wrong = {"authorization": "Bearer wrong"}
    for _ in range(MAX_FAILURES):
        assert httpx.get(f"{receiver.url}/predictions/p1", headers=wrong).status_code == 403
    started = time.monotonic()
    with pytest.raises(ShipError, match=r"holds off this address .* retry in 300 s"):
        wait_for_terminal_state(receiver.url, READ_TOKEN, "p1", started + PATIENCE)
    assert time.monotonic() - started < PATIENCE / 2
