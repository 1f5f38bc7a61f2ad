"""What the live-server fixtures yield: named fields rather than tuples to unpack by position.

`receiver` and `standin` (tests/conftest.py) serve on loopback; a test reads the URL and
reaches into the server's state (the receiver's store and clock, the stand-in's memory) by name.
`started` (tests/receiver/conftest.py) starts receiver processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from receiver.store import Store
from standin.local import ReceiverProcess
from standin.memory import StandIn
from tests.support.receiving import Clock

StartReceiver = Callable[[dict[str, str]], ReceiverProcess]
"""`started(env)`: a receiver process serving with `env`, stopped when the test ends."""


@dataclass(frozen=True)
class LiveReceiver:
    """A receiver app served on loopback without its background workers."""

    url: str
    store: Store
    clock: Clock  # the receiver's clock; a test moves it by setting `clock.now`


@dataclass(frozen=True)
class LiveStandIn:
    """The stand-in for Replicate served on loopback, and its memory for the test to arrange."""

    url: str
    memory: StandIn
