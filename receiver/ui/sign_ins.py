"""Sign-in attempts, limited per client: a wrong token costs whoever guesses it time.

The read token is as strong as its owner made it, and the sign-in form answers at once; so
after `MAX_FAILURES` wrong tokens from one client within `WINDOW_SECONDS`, that client's
sign-ins are refused (429, with Retry-After) until the oldest of them leaves the window, even
with the right token (else a guesser would learn it from the answer). A client is its address,
or its /64 network for IPv6 (one host usually holds a whole /64). Behind a proxy the address
is the proxy's unless the receiver believes its X-Forwarded-For
(`RECEIVER_FORWARDED_ALLOW_IPS`, as deploy/compose.yaml sets it). Kept in the
process, for at most `MAX_CLIENTS` clients (the least recently failed go first): memory stays
bounded whoever sends.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque

MAX_FAILURES = 5
WINDOW_SECONDS = 300.0
MAX_CLIENTS = 10_000


def client_key(address: str) -> str:
    """Who is counted: the address, or its /64 network for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an address (a Unix socket, a test client): counted as given
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class SignInGuard:
    def __init__(self) -> None:
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str, now: float) -> float | None:
        """Seconds before this client may try again; None: it may now."""
        failures = self._recent(client_key(address), now)
        if len(failures) < MAX_FAILURES:
            return None
        return failures[0] + WINDOW_SECONDS - now

    def failed(self, address: str, now: float) -> None:
        key = client_key(address)
        failures = self._recent(key, now)
        failures.append(now)
        self._failures[key] = failures
        self._failures.move_to_end(key)
        while len(self._failures) > MAX_CLIENTS:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(client_key(address), None)

    def _recent(self, key: str, now: float) -> deque[float]:
        """This client's failures still in the window, at most `MAX_FAILURES` of them."""
        failures = self._failures.get(key, deque(maxlen=MAX_FAILURES))
        while failures and failures[0] <= now - WINDOW_SECONDS:
            failures.popleft()
        return failures
