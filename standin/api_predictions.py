"""The stand-in's predictions: created through a deployment, read, canceled; the webhook secret.

A new prediction is queued on the dispatcher (when a Cog server is configured) and, if it
names a webhook, subscribed on the dispatcher's sender, as Replicate would deliver its events.
"""

from __future__ import annotations

import base64
import math
import os
from typing import Any
from urllib.parse import urlencode

import jsonschema
from fastapi import APIRouter, Request, Response

from standin.api_common import Dispatch, Memory, gateway_error, json_body, version_of
from standin.api_deployments import deployment_of
from standin.memory import ProblemError, StandIn, not_found, parse_iso
from standin.webhooks import EVENTS

PREDICTION_FIELDS = {"input", "stream", "webhook", "webhook_events_filter"}
PAGE_SIZE = 100  # Replicate's list pages

router = APIRouter(prefix="/v1")


def new_prediction_id() -> str:
    """An id in the shape of Replicate's (26 lower-case base32 characters)."""
    return base64.b32encode(os.urandom(16)).decode().lower().rstrip("=")[:26]


def check_prediction_request(body: Any, version: dict[str, Any]) -> None:
    """Refuse a prediction request Replicate would refuse; the input is checked by its schema."""
    if not isinstance(body, dict):
        raise ProblemError(422, "Invalid request", "the body must be a JSON object")
    if unknown := set(body) - PREDICTION_FIELDS:
        raise ProblemError(422, "Invalid request", f"unknown fields: {', '.join(sorted(unknown))}")
    webhook = body.get("webhook")
    if webhook is not None and (
        not isinstance(webhook, str) or not webhook.startswith(("https://", "http://"))
    ):
        raise ProblemError(422, "Invalid request", "webhook must be an http(s) URL")
    events = body.get("webhook_events_filter", list(EVENTS))
    if not isinstance(events, list) or not set(events) <= set(EVENTS):
        raise ProblemError(422, "Invalid request", f"webhook_events_filter: a list of {EVENTS}")
    schema = version["openapi_schema"]
    input_schema = {**schema["components"]["schemas"]["Input"], "components": schema["components"]}
    try:
        jsonschema.validate(body.get("input"), input_schema)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "input"
        raise ProblemError(422, "Invalid input", f"{where}: {exc.message}") from exc


def throttled(wait: float) -> ProblemError:
    """Replicate's 429 at its creation limit: the detail says when, as its own does."""
    seconds = max(1, math.ceil(wait))
    unit = "second" if seconds == 1 else "seconds"
    detail = f"Request was throttled. Expected available in {seconds} {unit}."
    return ProblemError(429, "Too Many Requests", detail, {"Retry-After": str(seconds)})


def prediction_of(memory: StandIn, prediction_id: str) -> dict[str, Any]:
    """The prediction `prediction_id`, or Replicate's 404 problem."""
    found = memory.predictions.get(prediction_id)
    if found is None:
        raise not_found(f"Prediction {prediction_id}")
    return found


@router.post("/deployments/{owner}/{name}/predictions", status_code=201, response_model=None)
async def create_prediction(
    memory: Memory, dispatcher: Dispatch, owner: str, name: str, request: Request
) -> dict[str, Any] | Response:
    wait = memory.throttle_creation()  # every creation request counts, as at Replicate's door
    if wait is not None:
        raise throttled(wait)
    current = deployment_of(memory, owner, name)["current_release"]
    body = await json_body(request)
    check_prediction_request(body, version_of(memory, current["model"], current["version"]))
    pid = new_prediction_id()
    prediction = memory.put(
        pid,
        "starting",
        model=current["model"],
        version=current["version"],
        input=body["input"],
        created_at=memory.now_iso(),
        deployment=f"{owner}/{name}",
    )
    if body.get("webhook"):
        events = body.get("webhook_events_filter", list(EVENTS))
        dispatcher.sender.subscribe(pid, body["webhook"], events, memory.retry_delays)
    if memory.cog_url is not None:
        dispatcher.queue.put_nowait(pid)
    memory.touched()
    if memory.lost_answers > 0:  # made, but the caller cannot know
        memory.lost_answers -= 1
        return gateway_error(502, "Bad Gateway")
    return prediction


def time_param(name: str, value: str | None) -> float | None:
    """A list filter's date-time; one that is not ISO 8601 is refused."""
    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError as exc:
        raise ProblemError(400, "Invalid request", f"{name}: not an ISO 8601 date-time") from exc


def newest_first(prediction: dict[str, Any]) -> tuple[float, str]:
    return (-parse_iso(prediction["created_at"]), prediction["id"])


@router.get("/predictions")
async def list_predictions(
    memory: Memory,
    created_after: str | None = None,
    created_before: str | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Every prediction, newest first, PAGE_SIZE a page; `created_after` is inclusive and
    `created_before` exclusive, as Replicate documents them. The cursor is the number of
    predictions already returned under the same filters (opaque to clients): a prediction
    created during a walk may repeat one at a page boundary, as with any offset. Async: it reads
    `memory` on the loop that changes it."""
    after = time_param("created_after", created_after)
    before = time_param("created_before", created_before)
    chosen = []
    for prediction in memory.predictions.values():
        at = parse_iso(prediction["created_at"])
        if after is not None and at < after:
            continue
        if before is not None and at >= before:
            continue
        chosen.append(prediction)
    chosen.sort(key=newest_first)
    start = int(cursor) if cursor and cursor.isdigit() else 0
    page = chosen[start : start + PAGE_SIZE]
    next_url = None
    if start + PAGE_SIZE < len(chosen):
        params = {"created_after": created_after, "created_before": created_before}
        kept = {key: value for key, value in params.items() if value is not None}
        query = urlencode({**kept, "cursor": str(start + PAGE_SIZE)})
        next_url = f"{memory.base_url}/v1/predictions?{query}"
    return {"next": next_url, "previous": None, "results": page}


@router.get("/predictions/{prediction_id}")
def get_prediction(memory: Memory, prediction_id: str) -> dict[str, Any]:
    return prediction_of(memory, prediction_id)


@router.post("/predictions/{prediction_id}/cancel")
async def cancel_prediction(
    memory: Memory, dispatcher: Dispatch, prediction_id: str
) -> dict[str, Any]:
    prediction_of(memory, prediction_id)
    await dispatcher.cancel(prediction_id)
    return prediction_of(memory, prediction_id)


@router.get("/webhooks/default/secret")
def webhook_secret(memory: Memory) -> dict[str, str]:
    return {"key": memory.secret}
