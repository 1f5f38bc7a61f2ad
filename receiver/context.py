"""What every route needs, kept on `app.state` and handed to routes as a FastAPI dependency.

One `AppContext` per app (no module globals): tests build several apps in one process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

if TYPE_CHECKING:  # bodies.py raises RefusedError from here
    from receiver.bodies import ByteBudget

from receiver.metrics import Metrics
from receiver.refusals import RefusalLog
from receiver.replicate_api import Replicate
from receiver.settings import Settings
from receiver.store import Store
from receiver.writer import Writer
from receiver.wrong_tokens import WrongTokens
from receiver.yielding import Arrivals


class RefusedError(Exception):
    """An answer other than 2xx, with a reason the sender may read."""

    def __init__(self, status: int, reason: str, **headers: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    keys: list[bytes]
    store: Store
    writer: Writer
    metrics: Metrics
    refusals: RefusalLog
    budget: ByteBudget
    arrivals: Arrivals  # webhooks counted for the download worker, which yields to them
    clock: Callable[[], float]
    replicate: Replicate | None  # with REPLICATE_API_TOKEN: jobs cancel predictions through it
    wrong_tokens: WrongTokens = field(default_factory=WrongTokens)  # read API and console


async def app_context(request: Request) -> AppContext:
    """async on purpose: FastAPI runs a plain `def` dependency in its thread pool, a hop that
    cost the webhook handler a third of its throughput (make bench-receiver: 0.60x of the
    baseline with it, 0.81-0.85x without)."""
    context: AppContext = request.app.state.context
    return context


Context = Annotated[AppContext, Depends(app_context)]
