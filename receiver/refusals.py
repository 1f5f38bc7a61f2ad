"""One WARNING line per refused webhook, so an operator sees a wrong secret or a clock skew,
but rate-limited: a flood of forged requests must not flood the log (or the disk). The latest
refusals are also kept in memory, bounded, for the console's list of the last hour's.

A line names the status, the reason the sender was given, the claimed webhook-id (printable,
truncated: it is the sender's text) and the client address (the proxy's X-Forwarded-For when
the proxy is trusted). Never the signature header or the body.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
WINDOW_SECONDS = 10.0
LINES_PER_WINDOW = 20
# Refusals kept for the console: a flood of forgeries costs a fixed amount of memory (about
# 3 MB); the console's count of the last hour stops at this.
RECENT = 10_000


def _printable(text: str | None, limit: int = 80) -> str:
    if not text:
        return "-"
    clean = _UNPRINTABLE.sub("?", text[:limit])
    return clean + ("..." if len(text) > limit else "")


@dataclass(frozen=True)
class Refusal:
    """One refused webhook as the console lists it; the sender's text made printable, short."""

    at: float  # epoch seconds
    status: int
    reason: str
    webhook_id: str
    client: str

    @property
    def signature(self) -> bool:
        """Refused for its signature or signature headers (the rest: size, body, store)."""
        return self.status == 401


class RefusalLog:
    """At most `limit` lines per `window` seconds; the rest are counted and summed up in one
    line when the next window starts (or when the receiver stops). Every refusal, logged or
    not, is also kept: the latest `RECENT`, for the console."""

    def __init__(
        self,
        log: logging.Logger,
        limit: int = LINES_PER_WINDOW,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.limit = limit
        self.window = window
        self.clock = clock
        self._window_start = -float("inf")
        self._logged = 0
        self._suppressed = 0
        self._recent: deque[Refusal] = deque(maxlen=RECENT)

    def refused(
        self, at: float, status: int, reason: str, webhook_id: str | None, client: str | None
    ) -> None:
        """`at`: the receiver's clock (epoch seconds), for the console's list."""
        refusal = Refusal(
            at, status, _printable(reason, 200), _printable(webhook_id), _printable(client)
        )
        self._recent.append(refusal)
        now = self.clock()
        if now - self._window_start >= self.window:
            self.flush()
            self._window_start = now
            self._logged = 0
        if self._logged >= self.limit:
            self._suppressed += 1
            return
        self._logged += 1
        self.log.warning(
            "refused webhook: %d %s (webhook-id %s, client %s)",
            refusal.status,
            refusal.reason,
            refusal.webhook_id,
            refusal.client,
        )

    def since(self, since: float) -> list[Refusal]:
        """The refusals kept from `since` on (epoch seconds), newest first."""
        found = []
        for refusal in reversed(self._recent):
            if refusal.at < since:
                break
            found.append(refusal)
        return found

    def flush(self) -> None:
        """Say how many refusals went unlogged, if any."""
        if self._suppressed:
            self.log.warning(
                "refused webhook: %d more not logged (at most %d lines per %g s)",
                self._suppressed,
                self.limit,
                self.window,
            )
            self._suppressed = 0
