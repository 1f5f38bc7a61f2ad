"""The receiver's routes, one router per audience: Replicate's webhook, the read API (behind a
bearer token), and health and metrics for the operator. Each takes what it needs from the
app's `AppContext` (see `receiver.context`)."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as FastApiPath
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from receiver import rules
from receiver.context import AppContext, Context, RefusedError
from receiver.signature import VerificationError, verify
from receiver.store import Delivery, iso
from receiver.writer import StoreError

WEBHOOK_PATH = "/webhooks/replicate"
MAX_FILES = 1_000_000  # file indexes beyond this cannot exist (and would overflow the driver)


async def _body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than `limit` bytes without reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise RefusedError(413, f"body over {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RefusedError(413, f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _payload(body: bytes) -> dict[str, Any]:
    try:
        payload: dict[str, Any] = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RefusedError(400, "body is not JSON") from exc
    if reason := rules.problem(payload):
        raise RefusedError(400, reason)
    return payload


def _cursor(created_at: float, pid: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at, pid]).encode()).decode()


def _parse_cursor(cursor: str) -> tuple[float, str]:
    try:
        created_at, pid = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return float(created_at), str(pid)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise RefusedError(400, "cursor is not one this API returned") from exc


webhook_routes = APIRouter()


async def _record(request: Request, ctx: AppContext) -> dict[str, str]:
    """Verify, parse and durably record one delivery: the answer for the sender."""
    settings = ctx.settings
    body = await _body(request, settings.receiver_max_body_bytes)
    try:
        webhook_id = verify(
            ctx.keys, request.headers, body, ctx.clock(), settings.receiver_tolerance_seconds
        )
    except VerificationError as exc:
        ctx.metrics.verification_failures.labels(exc.reason).inc()
        raise RefusedError(401, f"signature verification failed: {exc.reason}") from exc
    delivery = Delivery(webhook_id, _payload(body), ctx.clock(), raw=body)
    outcome = await ctx.writer.write(delivery)
    return {"status": outcome, "webhook_id": webhook_id}


@webhook_routes.post(WEBHOOK_PATH)
async def webhook(request: Request, ctx: Context) -> JSONResponse:
    started = time.perf_counter()
    try:
        answer = await _record(request, ctx)
    except RefusedError as exc:
        ctx.metrics.deliveries.labels(f"refused_{exc.status}").inc()
        client = request.client.host if request.client else None
        ctx.refusals.refused(exc.status, exc.reason, request.headers.get("webhook-id"), client)
        raise
    except (SQLAlchemyError, StoreError):
        ctx.metrics.deliveries.labels("store_unavailable").inc()
        raise
    ctx.metrics.deliveries.labels(answer["status"]).inc()
    ctx.metrics.latency.observe(time.perf_counter() - started)
    return JSONResponse(answer)


async def reader(request: Request, ctx: Context) -> None:
    """Bearer token for the read API, compared in constant time (async: no thread-pool hop)."""
    configured = ctx.settings.receiver_api_token
    if configured is None:
        raise RefusedError(403, "read API disabled: set RECEIVER_API_TOKEN")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise RefusedError(401, "bearer token required", **{"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(token.encode(), configured.get_secret_value().encode()):
        raise RefusedError(403, "wrong token")


read_routes = APIRouter(dependencies=[Depends(reader)])


@read_routes.get("/predictions/{prediction_id}")
def get_prediction(prediction_id: str, ctx: Context) -> dict[str, Any]:
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
    rows = ctx.store.predictions(status, limit, _parse_cursor(cursor) if cursor else None)
    last = rows[-1] if len(rows) == limit else None
    items = [
        {**r, "created_at": iso(r["created_at"]), "updated_at": iso(r["updated_at"])} for r in rows
    ]
    return {"items": items, "next": _cursor(last["created_at"], last["id"]) if last else None}


@read_routes.get("/predictions/{prediction_id}/files/{n}")
def get_file(
    prediction_id: str, n: Annotated[int, FastApiPath(ge=0, le=MAX_FILES)], ctx: Context
) -> FileResponse:
    row = ctx.store.file(prediction_id, n)
    if row is None:
        raise RefusedError(404, "no such file")
    if row["state"] != "done" or not row["path"]:
        raise RefusedError(409, f"file not stored yet (state: {row['state']})")
    return FileResponse(Path(row["path"]), media_type=row["content_type"])


operator_routes = APIRouter()


@operator_routes.get("/healthz")
def healthz(ctx: Context) -> JSONResponse:
    ctx.store.ping()  # raises SQLAlchemyError -> 503
    return JSONResponse({"status": "ok", "store": "ok"})


@operator_routes.get("/metrics")
def prometheus(ctx: Context) -> Response:
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
