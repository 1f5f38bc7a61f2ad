"""Poll until something another process holds is ready, or a deadline passes.

The stand-in, the receiver, Cog's server and Caddy run as other processes (or threads we cannot
join), so the tools and the tests that start them wait by asking again. One loop here instead
of one per caller; callers turn `PollTimeoutError` into their own error with their own words.
The ship scripts import it too: a checkout has localcog/ next to ship/.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class PollTimeoutError(TimeoutError):
    """`check` still had no answer when the time was up."""


def poll(check: Callable[[], T | None], timeout: float, interval: float, what: str) -> T:
    """Call `check` every `interval` seconds until it returns something other than None.

    `check` is always called at least once, and may raise to stop early (a process that exited
    will never become ready). On timeout, PollTimeoutError says `what` was not done.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise PollTimeoutError(f"{what}: not done after {timeout:.0f} s")
        time.sleep(interval)
