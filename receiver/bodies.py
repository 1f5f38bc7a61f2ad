"""Reading a webhook's body: within a size limit, a deadline, and a byte budget shared by every
connection, so senders that never finish cannot hold the receiver's memory or its time.

The budget counts the bytes a delivery may hold from the moment its body is accepted until its
answer is sent: the declared `content-length` is reserved up front (a body without one reserves
the size limit), and a delivery that does not fit is a 503 at once, before anything is read.
Replicate retries a 503, so a genuine delivery refused while the receiver is full comes back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import Request
from starlette.requests import ClientDisconnect

from receiver.context import RefusedError


class ClientGoneError(Exception):
    """The sender closed the connection before its body arrived: nobody is left to answer."""


class ByteBudget:
    """Bytes of webhook bodies held at once, across connections: at most `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    @contextmanager
    def reserve(self, size: int) -> Iterator[None]:
        """Hold `size` bytes of the budget for the block, or refuse with a 503 at once."""
        if self.held + size > self.limit:
            raise RefusedError(503, "receiver busy: too many bodies in flight, retry later")
        self.held += size
        try:
            yield
        finally:
            self.held -= size


def declared_size(request: Request, limit: int) -> int | None:
    """The body's declared length, refused with a 413 over `limit`; None when not declared."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    if not declared.isdigit() or int(declared) > limit:
        raise RefusedError(413, f"body over {limit} bytes")
    return int(declared)


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The raw body: at most `limit` bytes (413), all of it within `timeout` seconds (408)."""
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RefusedError(413, f"body over {limit} bytes")
                chunks.append(chunk)
    except TimeoutError as exc:
        raise RefusedError(408, f"body not received within {timeout:g} s") from exc
    except ClientDisconnect as exc:
        raise ClientGoneError from exc
    return b"".join(chunks)
