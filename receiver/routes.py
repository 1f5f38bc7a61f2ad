"""The receiver's routes, one router per audience: Replicate's webhook, the read API (behind a
bearer token), and health and metrics for the operator. Each takes what it needs from the
app's `AppContext` (see `receiver.context`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as FastApiPath
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from receiver import rules
from receiver.bodies import ClientGoneError, declared_size, read_body
from receiver.context import AppContext, Context, RefusedError
from receiver.file_response import prediction_file
from receiver.health import store_and_writer
from receiver.paging import page_cursor, parse_cursor, status_filter
from receiver.signature import VerificationError, check_body, check_headers
from receiver.store import Delivery, iso
from receiver.writer import StoreError
from receiver.wrong_tokens import TokenCheck

T = TypeVar("T")
log = logging.getLogger("receiver")
WEBHOOK_PATH = "/webhooks/replicate"
MAX_FILES = 1_000_000  # file indexes beyond this cannot exist (and would overflow the driver)


def _payload(body: bytes) -> dict[str, Any]:
    try:
        payload: dict[str, Any] = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RefusedError(400, "body is not JSON") from exc
    if reason := rules.problem(payload):
        raise RefusedError(400, reason)
    return payload


webhook_routes = APIRouter()  # filled below the handler


def _verified(ctx: AppContext, check: Callable[[], T]) -> T:
    """Run one verification step; a failure is counted by reason and answered 401."""
    try:
        return check()
    except VerificationError as exc:
        ctx.metrics.verification_failures.labels(exc.reason).inc()
        raise RefusedError(401, f"signature verification failed: {exc.reason}") from exc


async def _record(request: Request, ctx: AppContext) -> dict[str, str]:
    """Verify, parse and durably record one delivery: the answer for the sender. The headers
    are checked before a byte of the body is read; the body then holds part of a budget
    shared by every connection until the answer is sent."""
    settings = ctx.settings
    tolerance = settings.receiver_tolerance_seconds
    claim = _verified(ctx, lambda: check_headers(request.headers, ctx.clock(), tolerance))
    limit = settings.receiver_max_body_bytes
    declared_size(request, limit)  # a declared body over the limit is a 413 before any byte
    with ctx.budget.share() as share:
        body = await read_body(request, limit, settings.receiver_body_timeout_seconds, share)
        webhook_id = _verified(ctx, lambda: check_body(ctx.keys, claim, body))
        delivery = Delivery(webhook_id, _payload(body), ctx.clock(), raw=body)
        outcome = await ctx.writer.write(delivery, settings.receiver_store_timeout_seconds)
    return {"status": outcome, "webhook_id": webhook_id}


async def webhook(request: Request) -> Response:
    """Replicate's deliveries. A plain Starlette route, not a FastAPI one: it takes nothing
    FastAPI would validate or inject, and skipping that machinery is a tenth of the
    receiver's throughput (make bench-receiver)."""
    ctx: AppContext = request.app.state.context
    ctx.arrivals.arrived()
    started = time.perf_counter()
    try:
        answer = await _record(request, ctx)
    except RefusedError as exc:
        ctx.metrics.deliveries.labels(f"refused_{exc.status}").inc()
        client = request.client.host if request.client else None
        claimed_id = request.headers.get("webhook-id")
        ctx.refusals.refused(ctx.clock(), exc.status, exc.reason, claimed_id, client)
        raise
    except ClientGoneError:
        ctx.metrics.deliveries.labels("client_disconnected").inc()
        return Response(status_code=400)  # nobody is left to read it
    except (SQLAlchemyError, StoreError):
        ctx.metrics.deliveries.labels("store_unavailable").inc()
        raise
    ctx.metrics.deliveries.labels(answer["status"]).inc()
    ctx.metrics.latency.observe(time.perf_counter() - started)
    # orjson, not JSONResponse's json.dumps: a twentieth of the receiver's CPU per delivery.
    return Response(orjson.dumps(answer), media_type="application/json")


webhook_routes.add_route(WEBHOOK_PATH, webhook, methods=["POST"], include_in_schema=False)


def check_token(
    request: Request, ctx: AppContext, given: str, configured: str, where: str
) -> TokenCheck:
    """One check of the read token, limited per client and counted in /metrics by `where`
    (the read API, the console's sign-in)."""
    client = request.client.host if request.client else ""
    checked = ctx.wrong_tokens.check(client, given, configured, ctx.clock())
    ctx.metrics.token_checks.labels(where, checked.outcome).inc()
    return checked


async def reader(request: Request, ctx: Context) -> None:
    """Bearer token for the read API, compared in constant time (async: no thread-pool hop)."""
    configured = ctx.settings.receiver_api_token
    if configured is None:
        raise RefusedError(403, "read API disabled: set RECEIVER_API_TOKEN")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise RefusedError(401, "bearer token required", **{"WWW-Authenticate": "Bearer"})
    checked = check_token(request, ctx, token, configured.get_secret_value(), "api")
    if checked.outcome == "limited":
        wait = str(checked.retry_after)
        reason = f"too many wrong tokens from this address: try again in {wait} s"
        raise RefusedError(429, reason, **{"Retry-After": wait})
    if checked.outcome == "wrong":
        raise RefusedError(403, "wrong token")


read_routes = APIRouter(dependencies=[Depends(reader)])


@read_routes.get("/predictions/{prediction_id}")
def get_prediction(prediction_id: str, ctx: Context) -> dict[str, Any]:
    if not rules.valid_id(prediction_id):  # never stored; and PostgreSQL cannot compare NUL
        raise RefusedError(404, "no such prediction")
    found = ctx.store.prediction(prediction_id)
    if found is None:
        raise RefusedError(404, "no such prediction")
    return found


@read_routes.get("/predictions")
def list_predictions(
    ctx: Context,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    before = parse_cursor(cursor) if cursor else None
    rows = ctx.store.predictions(status_filter(status), limit, before)
    last = rows[-1] if len(rows) == limit else None
    items = [
        {**r, "created_at": iso(r["created_at"]), "updated_at": iso(r["updated_at"])} for r in rows
    ]
    return {"items": items, "next": page_cursor(last["created_at"], last["id"]) if last else None}


@read_routes.get("/predictions/{prediction_id}/files/{n}")
def get_file(
    prediction_id: str, n: Annotated[int, FastApiPath(ge=0, le=MAX_FILES)], ctx: Context
) -> FileResponse:
    return prediction_file(ctx.store, prediction_id, n)


operator_routes = APIRouter()


@operator_routes.get("/healthz")
async def healthz(ctx: Context) -> JSONResponse:
    """200 only if the store answers a read and the writer process commits a heartbeat (see
    `receiver.health`). Reasons go to the log, not to this open route."""
    store, writer = await store_and_writer(ctx)
    body = {
        "status": "ok" if store and writer else "unavailable",
        "store": "ok" if store else "unreachable",
        "writer": "ok" if writer else "cannot commit",
    }
    return JSONResponse(body, 200 if store and writer else 503)


@operator_routes.get("/metrics")
def prometheus(ctx: Context) -> Response:
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
