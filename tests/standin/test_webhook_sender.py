"""The stand-in sends webhooks as Replicate does: signed, retried only when terminal, throttled."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence

from receiver.signature import decode_secret, verify
from standin.webhooks import EVENTS, Attempt, WebhookSender
from tests.support.loopback_http import WebhookSink
from tests.support.standin import STANDIN_SECRET

STATE = {"id": "p1", "status": "succeeded", "output": [[0.5]], "completed_at": None}


def send(
    sink: WebhookSink,
    events: Sequence[str],
    *,
    subscribed: Sequence[str] = EVENTS,
    retry_delays: Sequence[float] = (),
    expect: int = 0,
) -> list[Attempt]:
    """Notify `events` for one prediction; return once `expect` requests have arrived and
    every delivery, retries included, has finished."""
    attempts: list[Attempt] = []

    async def main() -> None:
        sender = WebhookSender(STANDIN_SECRET, lambda _: STATE, attempts.append)
        sender.subscribe("p1", sink.url, subscribed, retry_delays)
        for event in events:
            sender.notify("p1", event)
        await asyncio.to_thread(sink.wait_requests, expect)
        while tasks := sender.subscriptions["p1"].tasks:
            await asyncio.gather(*tasks)
        await sender.close()

    asyncio.run(main())
    return attempts


def test_terminal_event_is_retried_under_one_id_and_signed_verifiably(sink: WebhookSink) -> None:
    sink.statuses = [503, 500]
    attempts = send(sink, ["completed"], retry_delays=(0.01, 0.01, 0.01), expect=3)
    assert [a.outcome for a in attempts] == ["503", "500", "200"]
    assert len(sink.requests) == 3
    ids = {headers["webhook-id"] for _, headers, _ in sink.requests}
    assert len(ids) == 1  # retries keep the event's webhook-id
    for _, headers, body in sink.requests:
        assert body == STATE  # the full prediction object
        raw = json.dumps(body).encode()
        # Signed by the standardwebhooks library, verified by our receiver's verifier.
        assert verify([decode_secret(STANDIN_SECRET)], headers, raw, time.time(), 300) in ids


def test_terminal_event_gives_up_after_the_schedule(sink: WebhookSink) -> None:
    sink.statuses = [503] * 10
    attempts = send(sink, ["completed"], retry_delays=(0.01, 0.01), expect=3)
    assert [a.outcome for a in attempts] == ["503", "503", "503", "gave up"]
    assert len(sink.requests) == 3


def test_only_the_terminal_event_is_retried(sink: WebhookSink) -> None:
    sink.statuses = [503]
    attempts = send(sink, ["start"], retry_delays=(0.01, 0.01), expect=1)
    assert [a.outcome for a in attempts] == ["503"]
    assert len(sink.requests) == 1


def test_redirects_are_not_followed(sink: WebhookSink) -> None:
    sink.statuses = [307, 307]
    attempts = send(sink, ["completed"], retry_delays=(0.01,), expect=2)
    assert [a.outcome for a in attempts] == ["307", "307", "gave up"]
    assert len(sink.requests) == 2  # nothing went to the Location


def test_output_and_logs_events_at_most_every_500_ms(sink: WebhookSink) -> None:
    attempts = send(sink, ["output", "logs", "output", "logs", "output"], expect=2)
    assert [a.event for a in attempts] == ["output", "logs"]  # the first deferred names it
    (first, *_), (second, *_) = sink.requests
    assert second - first >= 0.45  # the later changes went out together, once, 500 ms on
    assert len({headers["webhook-id"] for _, headers, _ in sink.requests}) == 2


def test_events_outside_the_filter_are_not_sent(sink: WebhookSink) -> None:
    attempts = send(sink, ["start", "output", "completed"], subscribed=["completed"], expect=1)
    assert [a.event for a in attempts] == ["completed"]
    assert len(sink.requests) == 1
