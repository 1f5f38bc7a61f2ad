"""The health line on every console page: what /healthz checks, the download queue, the
dead-lettered files and the signatures refused in the last hour."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from receiver.context import AppContext
from receiver.health import store_and_writer
from receiver.ui.views import files_by_state

HOUR = 3600


@dataclass(frozen=True)
class Health:
    """What the health line shows. Each page load runs /healthz's two checks (the writer's is
    a heartbeat commit: cheap, and the honest answer to "can it store a delivery now")."""

    store: bool
    writer: bool
    queued_files: int | None  # queued or downloading; None: the store did not say
    dead_files: int | None
    refused_last_hour: int


async def health(ctx: AppContext) -> Health:
    store, writer = await store_and_writer(ctx)
    counts: dict[str, int] | None = None
    if store:
        try:
            counts = await asyncio.to_thread(
                files_by_state, ctx.store.reads.engine, ("queued", "running", "dead")
            )
        except SQLAlchemyError:
            counts = None
    return Health(
        store=store,
        writer=writer,
        queued_files=None if counts is None else counts.get("queued", 0) + counts.get("running", 0),
        dead_files=None if counts is None else counts.get("dead", 0),
        refused_last_hour=sum(r.signature for r in ctx.refusals.since(ctx.clock() - HOUR)),
    )
