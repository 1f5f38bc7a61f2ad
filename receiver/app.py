"""The receiver's HTTP surface: the signed webhook endpoint, the read API, health and metrics.

`create_app` takes its settings, keys, store and clock as arguments: the CLI builds them
from the environment, tests build them directly.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as FastApiPath
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from receiver import rules
from receiver.metrics import Metrics
from receiver.refusals import RefusalLog
from receiver.settings import Settings
from receiver.signature import VerificationError, verify
from receiver.store import Delivery, Store, iso
from receiver.writer import Writer

log = logging.getLogger("receiver")
WEBHOOK_PATH = "/webhooks/replicate"
MAX_FILES = 1_000_000  # file indexes beyond this cannot exist (and would overflow the driver)


class RefusedError(Exception):
    """An answer other than 2xx, with a reason the sender may read."""

    def __init__(self, status: int, reason: str, **headers: str) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers


async def _body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than `limit` bytes without reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise RefusedError(413, f"body over {limit} bytes")
    chunks, size = [], 0
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


def create_app(
    settings: Settings,
    keys: list[bytes],
    store: Store,
    clock: Callable[[], float] = time.time,
    workers: list[Any] | None = None,
    refusals: RefusalLog | None = None,
) -> FastAPI:
    metrics = Metrics(store.queue_depth)
    writer = Writer(store)
    refusal_log = refusals or RefusalLog(log)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await writer.start()
        for worker in workers or []:
            worker.start()
        yield
        for worker in workers or []:
            worker.stop()
        await writer.stop()
        refusal_log.flush()

    # Replicate does not follow redirects: /webhooks/replicate/ must not 307 to the real path.
    app = FastAPI(title="Replicate webhook receiver", lifespan=lifespan, redirect_slashes=False)

    @app.exception_handler(RefusedError)
    async def refused(_: Request, exc: RefusedError) -> JSONResponse:
        return JSONResponse({"error": exc.reason}, exc.status, headers=exc.headers)

    @app.exception_handler(SQLAlchemyError)
    async def store_down(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        # The store failed, not the sender: 503 makes Replicate retry the delivery.
        log.warning("store error: %s", " ".join(str(exc).split())[:300])
        return JSONResponse({"error": "store unavailable, retry later"}, 503)

    @app.post(WEBHOOK_PATH)
    async def webhook(request: Request) -> JSONResponse:
        started = time.perf_counter()
        try:
            body = await _body(request, settings.receiver_max_body_bytes)
            try:
                webhook_id = verify(
                    keys, request.headers, body, clock(), settings.receiver_tolerance_seconds
                )
            except VerificationError as exc:
                metrics.verification_failures.labels(exc.reason).inc()
                raise RefusedError(401, f"signature verification failed: {exc.reason}") from exc
            payload = _payload(body)
            delivery = Delivery(webhook_id, payload, clock(), raw=body)
            outcome = await writer.write(delivery)
        except RefusedError as exc:
            metrics.deliveries.labels(f"refused_{exc.status}").inc()
            client = request.client.host if request.client else None
            refusal_log.refused(exc.status, exc.reason, request.headers.get("webhook-id"), client)
            raise
        except SQLAlchemyError:
            metrics.deliveries.labels("store_unavailable").inc()
            raise
        metrics.deliveries.labels(outcome).inc()
        metrics.latency.observe(time.perf_counter() - started)
        return JSONResponse({"status": outcome, "webhook_id": webhook_id})

    def reader(request: Request) -> None:
        """Bearer token for the read API, compared in constant time."""
        configured = settings.receiver_api_token
        if configured is None:
            raise RefusedError(403, "read API disabled: set RECEIVER_API_TOKEN")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise RefusedError(401, "bearer token required", **{"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(token.encode(), configured.get_secret_value().encode()):
            raise RefusedError(403, "wrong token")

    authorized = [Depends(reader)]

    @app.get("/predictions/{prediction_id}", dependencies=authorized)
    def get_prediction(prediction_id: str) -> dict[str, Any]:
        found = store.prediction(prediction_id)
        if found is None:
            raise RefusedError(404, "no such prediction")
        return found

    @app.get("/predictions", dependencies=authorized)
    def list_predictions(
        status: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        rows = store.predictions(status, limit, _parse_cursor(cursor) if cursor else None)
        last = rows[-1] if len(rows) == limit else None
        items = [
            {**r, "created_at": iso(r["created_at"]), "updated_at": iso(r["updated_at"])}
            for r in rows
        ]
        return {"items": items, "next": _cursor(last["created_at"], last["id"]) if last else None}

    @app.get("/predictions/{prediction_id}/files/{n}", dependencies=authorized)
    def get_file(
        prediction_id: str, n: Annotated[int, FastApiPath(ge=0, le=MAX_FILES)]
    ) -> FileResponse:
        row = store.file(prediction_id, n)
        if row is None:
            raise RefusedError(404, "no such file")
        if row["state"] != "done" or not row["path"]:
            raise RefusedError(409, f"file not stored yet (state: {row['state']})")
        return FileResponse(Path(row["path"]), media_type=row["content_type"])

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        store.ping()  # raises SQLAlchemyError -> 503
        return JSONResponse({"status": "ok", "store": "ok"})

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
