"""Wrong tokens, limited per client: guessing the read token costs whoever guesses time.

The read token is as strong as its owner made it, and both the read API and the console's
sign-in form answer at once; so after `MAX_FAILURES` wrong tokens from one client within
`WINDOW_SECONDS`, that client is refused (429, with Retry-After) until the oldest of them
leaves the window, even with the right token (else a guesser would learn it from the answer).
A success clears nothing: another user behind the same address must not reset a guesser's
count. A client is its address (an IPv4-mapped IPv6 address is its IPv4 one), or its /64
network for IPv6 (one host usually holds a whole /64). Behind a proxy the address is the
proxy's unless the receiver believes its X-Forwarded-For (`RECEIVER_FORWARDED_ALLOW_IPS`, as
deploy/compose.yaml sets it). Kept in the process, for at most `max_clients` clients (the
least recently failed go first): memory stays bounded whoever sends.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Literal

MAX_FAILURES = 5
WINDOW_SECONDS = 300.0
MAX_CLIENTS = 10_000


@dataclass(frozen=True)
class TokenCheck:
    outcome: Literal["ok", "wrong", "limited"]
    retry_after: int = 0  # seconds, when limited


def client_key(address: str) -> str:
    """Who is counted: the address, or its /64 network for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an address (a Unix socket, a test client): counted as given
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)  # a dual-stack socket's view of an IPv4 client
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class WrongTokens:
    def __init__(self, max_clients: int = MAX_CLIENTS) -> None:
        self.max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def check(self, client: str, given: str, configured: str, now: float) -> TokenCheck:
        """Compare `given` with `configured` in constant time, unless this client is held."""
        wait = self.retry_after(client, now)
        if wait is not None:
            return TokenCheck("limited", math.ceil(wait))
        if not hmac.compare_digest(given.encode(), configured.encode()):
            self.failed(client, now)
            return TokenCheck("wrong")
        return TokenCheck("ok")

    def retry_after(self, client: str, now: float) -> float | None:
        """Seconds before this client may try again; None: it may now."""
        failures = self._recent(client_key(client), now)
        if len(failures) < MAX_FAILURES:
            return None
        return failures[0] + WINDOW_SECONDS - now

    def failed(self, client: str, now: float) -> None:
        key = client_key(client)
        failures = self._recent(key, now)
        failures.append(now)
        self._failures[key] = failures
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def _recent(self, key: str, now: float) -> deque[float]:
        """This client's failures still in the window, at most `MAX_FAILURES` of them."""
        failures = self._failures.get(key, deque(maxlen=MAX_FAILURES))
        while failures and failures[0] <= now - WINDOW_SECONDS:
            failures.popleft()
        return failures
