"""Downloads yield to webhooks: the receiver counts the webhooks that reach it and tells its
download process, ten times a second, on the download process's stdin.

While webhooks come faster than RECEIVER_DOWNLOAD_YIELD_ABOVE a second, the download worker
runs four files at once and ten turns a second at most (`receiver.downloads`). Why not leave
it to `nice`: on a machine with two cores, a niced download process with sixteen threads still
cost the webhooks a third of their throughput (`make bench-receiver`, backlog part); stopping
it gave them back all but a few percent. One Replicate account at its API limit (600
predictions a minute, a few webhooks each) sends a few dozen a second, so at the default only
bursts make the queue yield (a replay, retries after an outage), and the queue has an hour.
"""

from __future__ import annotations

import time
from collections.abc import Callable

TICK_SECONDS = 0.1  # how often the receiver tells its download process what arrived
STALE_SECONDS = 1.0  # a count older than this says nothing: the receiver stopped telling


class Arrivals:
    """The receiver's side. `arrived` is called on the event loop for each webhook, `pulse`
    from the thread that tends the download process: only the event loop writes `count`,
    so neither needs a lock."""

    def __init__(self) -> None:
        self.count = 0
        self._told = 0

    def arrived(self) -> None:
        self.count += 1

    def pulse(self) -> bytes:
        """The line for the download process: webhooks since the previous line."""
        count = self.count
        line = f"{count - self._told}\n".encode()
        self._told = count
        return line


class Pace:
    """The download process's side: `heard` takes each line from the receiver; `yielding`
    says whether the latest one, if recent, was over the threshold (0: never yield)."""

    def __init__(self, above: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.above = above
        self.clock = clock
        self.rate = 0.0
        self.heard_at = -STALE_SECONDS

    def heard(self, line: bytes) -> None:
        try:
            arrived = int(line)
        except ValueError:
            return  # not a count: nothing to go by
        self.rate = arrived / TICK_SECONDS
        self.heard_at = self.clock()

    def yielding(self) -> bool:
        if self.above <= 0 or self.clock() - self.heard_at > STALE_SECONDS:
            return False
        return self.rate > self.above
