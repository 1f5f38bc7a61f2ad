"""Webhooks sent the way Replicate sends them, for the local stand-in.

What a receiver must cope with, reproduced: the body is the full prediction object; the
Standard Webhooks headers are signed with the account's secret (by the `standardwebhooks`
library, not by our receiver's code, so a mistake in one cannot hide in the other); each event
gets a new `webhook-id` and its retries keep it; `output` and `logs` events go out at most every
500 ms; only the terminal event is retried, with backoff, for about a minute; redirects are not
followed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

EVENTS = ("start", "output", "logs", "completed")
THROTTLED = {"output", "logs"}
# The last try about a minute after completion, as Replicate does.
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


@dataclass
class Attempt:
    """One try at delivering one event, for the stand-in's log."""

    prediction_id: str
    event: str
    webhook_id: str
    attempt: int
    outcome: str  # "200", "503", "ConnectError", ... or "gave up"


@dataclass
class Subscription:
    """Where a prediction's events go, and which ones."""

    url: str
    events: frozenset[str]
    retry_delays: Sequence[float]
    last_throttled: float = 0.0
    flush: asyncio.TimerHandle | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class WebhookSender:
    """Delivers events of predictions; runs on the stand-in's event loop."""

    def __init__(
        self,
        secret: str,
        snapshot: Callable[[str], dict[str, Any]],
        record: Callable[[Attempt], None],
        throttle: float = 0.5,
    ) -> None:
        self.signer = Webhook(secret)
        self.snapshot = snapshot  # the prediction's current state, as GET returns it
        self.record = record
        self.throttle = throttle
        self.subscriptions: dict[str, Subscription] = {}
        self.http = httpx.AsyncClient(follow_redirects=False, timeout=10)

    def subscribe(
        self,
        prediction_id: str,
        url: str,
        events: Sequence[str],
        retry_delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        self.subscriptions[prediction_id] = Subscription(url, frozenset(events), retry_delays)

    def notify(self, prediction_id: str, event: str) -> None:
        """The prediction changed: send `event` now, or later if it is throttled."""
        sub = self.subscriptions.get(prediction_id)
        if sub is None or event not in sub.events:
            return
        if event not in THROTTLED:
            self._send(prediction_id, sub, event)
            return
        wait = sub.last_throttled + self.throttle - time.monotonic()
        if wait <= 0:
            sub.last_throttled = time.monotonic()
            self._send(prediction_id, sub, event)
        elif sub.flush is None:  # one delayed send carries every change until then
            sub.flush = asyncio.get_running_loop().call_later(
                wait, self._flush, prediction_id, sub, event
            )

    def _flush(self, prediction_id: str, sub: Subscription, event: str) -> None:
        sub.flush = None
        if self.snapshot(prediction_id).get("completed_at") is None:  # else `completed` says it
            sub.last_throttled = time.monotonic()
            self._send(prediction_id, sub, event)

    def _send(self, prediction_id: str, sub: Subscription, event: str) -> None:
        body = json.dumps(self.snapshot(prediction_id))
        delays = sub.retry_delays if event == "completed" else ()
        task = asyncio.get_running_loop().create_task(
            self._deliver(prediction_id, sub.url, event, body, delays)
        )
        sub.tasks.add(task)
        task.add_done_callback(sub.tasks.discard)

    async def _deliver(
        self, prediction_id: str, url: str, event: str, body: str, delays: Sequence[float]
    ) -> None:
        webhook_id = f"msg_{uuid.uuid4().hex}"
        for attempt, delay in enumerate([0.0, *delays], start=1):
            await asyncio.sleep(delay)
            now = datetime.now(UTC)
            headers = {
                "content-type": "application/json",
                "webhook-id": webhook_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": self.signer.sign(webhook_id, now, body),
            }
            try:
                response = await self.http.post(url, content=body, headers=headers)
                outcome = str(response.status_code)
                delivered = response.is_success
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
                delivered = False
            self.record(Attempt(prediction_id, event, webhook_id, attempt, outcome))
            if delivered:
                return
        if delays:
            self.record(Attempt(prediction_id, event, webhook_id, len(delays) + 1, "gave up"))

    async def close(self) -> None:
        for sub in self.subscriptions.values():
            if sub.flush is not None:
                sub.flush.cancel()
            for task in list(sub.tasks):
                task.cancel()
        await self.http.aclose()
