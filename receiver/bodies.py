"""Reading a webhook's body: within a size limit, a deadline, and a byte budget shared by every
connection, so senders that never finish cannot hold the receiver's memory or its time.

The budget counts the bytes of bodies held, from their arrival until their answer is sent:
each chunk takes its share as it arrives (a declared `content-length` reserves nothing, since
headers of the right shape cost nothing to forge), and a body that no longer fits is a 503.
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
    def share(self) -> Iterator[Share]:
        """One body's share, given back when the block ends."""
        share = Share(self)
        try:
            yield share
        finally:
            self.held -= share.size


class Share:
    """The bytes one body holds of a `ByteBudget`."""

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.size = 0

    def take(self, size: int) -> None:
        """Hold `size` more bytes, or refuse the body with a 503."""
        if self.budget.held + size > self.budget.limit:
            raise RefusedError(503, "receiver busy: too many bodies in flight, retry later")
        self.budget.held += size
        self.size += size


def declared_size(request: Request, limit: int) -> int | None:
    """The body's declared length, refused with a 413 over `limit`; None when not declared."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    if not declared.isdigit() or int(declared) > limit:
        raise RefusedError(413, f"body over {limit} bytes")
    return int(declared)


async def read_body(request: Request, limit: int, timeout: float, share: Share) -> bytes:
    """The raw body: at most `limit` bytes (413), all of it within `timeout` seconds (408),
    each chunk taken from `share` as it arrives (503 when the budget is spent)."""
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RefusedError(413, f"body over {limit} bytes")
                share.take(len(chunk))
                chunks.append(chunk)
    except TimeoutError as exc:
        raise RefusedError(408, f"body not received within {timeout:g} s") from exc
    except ClientDisconnect as exc:
        raise ClientGoneError from exc
    return b"".join(chunks)
