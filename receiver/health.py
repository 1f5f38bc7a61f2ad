"""Whether the receiver can do its job: the store answers a read and the writer process
commits a heartbeat, each within RECEIVER_STORE_TIMEOUT_SECONDS (a read alone said ok on a
full disk, and a locked table made it wait as long as the lock). For /healthz and the console."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from sqlalchemy.exc import SQLAlchemyError

from receiver.context import AppContext
from receiver.writer import StoreError

log = logging.getLogger("receiver")


async def store_and_writer(ctx: AppContext) -> tuple[bool, bool]:
    """Both checks at once: a stuck store costs one timeout, not two."""
    timeout = ctx.settings.receiver_store_timeout_seconds
    store, writer = await asyncio.gather(
        _healthy("store", asyncio.to_thread(ctx.store.ping), timeout),
        _healthy("writer", ctx.writer.probe(timeout), timeout),
    )
    return store, writer


async def _healthy(part: str, check: Awaitable[None], timeout: float) -> bool:
    try:
        await asyncio.wait_for(check, timeout)
    except TimeoutError:
        log.warning("healthz: %s gave no answer within %g s", part, timeout)
        return False
    except (SQLAlchemyError, StoreError) as exc:
        log.warning("healthz: %s: %s", part, " ".join(str(exc).split())[:300])
        return False
    return True
