"""The HTTP connection itself: a deadline for each request's headers, however slowly they come.

uvicorn closes a connection that stays idle after a response (`timeout_keep_alive`), but its
timer is cancelled by any byte received, and a new connection has none: a client that sends half
a request line, or one byte of headers every few seconds, holds the connection for good. Here a
connection must complete each request's headers within `header_timeout` seconds of connecting or
of its previous response, or it is closed; so must the rest of a body answered before it was
read (a 401 on its headers). Bodies have their own deadline (receiver.bodies);
the number of connections is capped by uvicorn's `limit_concurrency` (503 beyond it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on the headers of every request."""

    header_timeout = 10.0  # set by `with_header_deadline`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # a request's headers are complete and it is being answered

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            # The next request gets its own deadline; so does the rest of a body that was
            # answered early (a 401 before it was read): trickling it holds nothing for long.
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _expired(self) -> None:
        self._header_deadline = None
        answering = self.cycle is not None and not self.cycle.response_complete
        if not answering and not self.transport.is_closing():
            self.transport.close()


def with_header_deadline(seconds: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class to give uvicorn (`http=`), with this deadline."""
    return type("HeaderDeadline", (HeaderDeadlineProtocol,), {"header_timeout": seconds})
