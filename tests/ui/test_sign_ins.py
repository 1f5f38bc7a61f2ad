"""The sign-in limit's bookkeeping: who counts as one client, the window, the bound on memory."""

from __future__ import annotations

import pytest

from receiver.ui import sign_ins
from receiver.ui.sign_ins import MAX_FAILURES, WINDOW_SECONDS, SignInGuard, client_key


def fail(guard: SignInGuard, address: str, times: int, now: float = 0.0) -> None:
    for _ in range(times):
        guard.failed(address, now)


def test_an_ipv6_client_is_its_64_network_an_ipv4_one_its_address() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("192.0.2.1") != client_key("192.0.2.2")
    assert client_key("testclient") == "testclient"


def test_the_limit_is_per_client_and_lifts_as_failures_age() -> None:
    guard = SignInGuard()
    fail(guard, "192.0.2.1", MAX_FAILURES - 1, now=0.0)
    assert guard.retry_after("192.0.2.1", 1.0) is None
    guard.failed("192.0.2.1", 10.0)
    assert guard.retry_after("192.0.2.1", 10.0) == WINDOW_SECONDS - 10  # the first one's age
    assert guard.retry_after("192.0.2.2", 10.0) is None  # another client is not held
    assert guard.retry_after("192.0.2.1", WINDOW_SECONDS) is None  # the first four aged out
    guard.succeeded("192.0.2.1")
    fail(guard, "192.0.2.1", MAX_FAILURES - 1, now=WINDOW_SECONDS)
    assert guard.retry_after("192.0.2.1", WINDOW_SECONDS) is None  # a success starts afresh


def test_memory_stays_bounded_and_the_least_recent_client_goes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sign_ins, "MAX_CLIENTS", 3)
    guard = SignInGuard()
    for n in range(4):
        fail(guard, f"192.0.2.{n}", MAX_FAILURES)
    assert guard.retry_after("192.0.2.0", 1.0) is None  # forgotten: it failed least recently
    assert all(guard.retry_after(f"192.0.2.{n}", 1.0) for n in (1, 2, 3))
