"""The wrong-token limit's bookkeeping: who counts as one client, the window, the bound on
memory. (Over HTTP: tests/ui/test_pages.py and tests/receiver/test_read_api.py.)"""

from __future__ import annotations

from receiver.wrong_tokens import MAX_FAILURES, WINDOW_SECONDS, WrongTokens, client_key

TOKEN = "the-read-token"


def fail(guard: WrongTokens, address: str, times: int, now: float = 0.0) -> None:
    for _ in range(times):
        assert guard.check(address, "guess", TOKEN, now).outcome == "wrong"


def test_an_ipv6_client_is_its_64_network_an_ipv4_one_its_address() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("192.0.2.1") != client_key("192.0.2.2")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"  # a dual-stack socket's IPv4 client
    assert client_key("::ffff:192.0.2.1") != client_key("::ffff:192.0.2.2")
    assert client_key("testclient") == "testclient"


def test_the_limit_is_per_client_and_lifts_as_failures_age() -> None:
    guard = WrongTokens()
    fail(guard, "192.0.2.1", MAX_FAILURES - 1, now=0.0)
    assert guard.check("192.0.2.1", TOKEN, TOKEN, 1.0).outcome == "ok"
    fail(guard, "192.0.2.1", 1, now=10.0)
    held = guard.check("192.0.2.1", TOKEN, TOKEN, 10.0)
    assert (held.outcome, held.retry_after) == ("limited", WINDOW_SECONDS - 10)  # first one
    assert guard.check("192.0.2.2", TOKEN, TOKEN, 10.0).outcome == "ok"  # another client
    assert guard.check("192.0.2.1", TOKEN, TOKEN, WINDOW_SECONDS).outcome == "ok"  # aged out


def test_a_success_does_not_reset_a_guessers_count() -> None:
    """Behind one address, a user who knows the token must not renew a guesser's tries."""
    guard = WrongTokens()
    fail(guard, "192.0.2.1", MAX_FAILURES - 1)
    assert guard.check("192.0.2.1", TOKEN, TOKEN, 1.0).outcome == "ok"
    fail(guard, "192.0.2.1", 1, now=2.0)
    assert guard.check("192.0.2.1", "guess", TOKEN, 3.0).outcome == "limited"


def test_memory_stays_bounded_and_the_least_recent_client_goes() -> None:
    guard = WrongTokens(max_clients=3)
    for n in range(4):
        fail(guard, f"192.0.2.{n}", MAX_FAILURES)
    assert guard.check("192.0.2.0", TOKEN, TOKEN, 1.0).outcome == "ok"  # forgotten
    for n in (1, 2, 3):
        assert guard.check(f"192.0.2.{n}", TOKEN, TOKEN, 1.0).outcome == "limited"
