"""The receiver's HTTP app: the signed webhook endpoint, the read API, health and metrics, the
jobs API and the console's pages (/ui).

`create_app` takes its settings, keys, store and clock as arguments: the CLI builds them
from the environment, tests build them directly. They go on `app.state` as one `AppContext`,
which the routes (`receiver.routes`) take as a dependency.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from receiver.bodies import ByteBudget
from receiver.context import AppContext, RefusedError
from receiver.jobs.routes import job_routes
from receiver.metrics import Metrics
from receiver.refusals import RefusalLog
from receiver.replicate_api import Replicate
from receiver.routes import operator_routes, read_routes, webhook_routes
from receiver.settings import Settings
from receiver.store import Store
from receiver.ui.job_routes import ui_job_routes
from receiver.ui.pages import SignInRequiredError, in_console, invalid_reason, problem_page
from receiver.ui.routes import ui_routes
from receiver.workers import Worker
from receiver.writer import StoreError, Writer
from receiver.yielding import Arrivals

log = logging.getLogger("receiver")


def create_app(
    settings: Settings,
    keys: list[bytes],
    store: Store,
    clock: Callable[[], float] = time.time,
    workers: list[Worker] | None = None,
    refusals: RefusalLog | None = None,
    arrivals: Arrivals | None = None,
) -> FastAPI:
    context = AppContext(
        settings=settings,
        keys=keys,
        store=store,
        writer=Writer(store.config),
        metrics=Metrics(store.queue_depth),
        refusals=refusals or RefusalLog(log),
        budget=ByteBudget(settings.receiver_max_bytes_in_flight),
        arrivals=arrivals or Arrivals(),
        clock=clock,
        replicate=Replicate(settings) if settings.replicate_api_token is not None else None,
    )
    # Replicate does not follow redirects: /webhooks/replicate/ must not 307 to the real path.
    app = FastAPI(
        title="Replicate webhook receiver",
        lifespan=_lifespan(context, workers or []),
        redirect_slashes=False,
        # No interactive docs or schema: the README documents the API, and the receiver
        # serves nothing it does not need on a public address.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.context = context
    app.add_exception_handler(RefusedError, _refused)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(StoreError, _writer_failed)
    app.add_exception_handler(SQLAlchemyError, _store_down)
    app.include_router(webhook_routes)
    app.include_router(read_routes)
    app.include_router(operator_routes)
    app.include_router(job_routes)
    app.add_exception_handler(SignInRequiredError, _sign_in_first)
    app.include_router(ui_routes)
    app.include_router(ui_job_routes)
    return app


def _lifespan(
    context: AppContext, workers: list[Worker]
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start the writer process and the workers with the app; stop them after the last request."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await context.writer.start()
        for worker in workers:
            worker.start()
        yield
        for worker in workers:
            worker.stop()
        await context.writer.stop()
        context.refusals.flush()

    return lifespan


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RefusedError)  # registered for RefusedError only
    if in_console(request):
        return problem_page(request, exc.status, exc.reason, exc.headers)
    return JSONResponse({"error": exc.reason}, exc.status, headers=exc.headers)


async def _invalid(request: Request, exc: Exception) -> Response:
    """A path or query the route's types refuse: FastAPI's 422, or a page in the console."""
    assert isinstance(exc, RequestValidationError)
    if in_console(request):
        return problem_page(request, 422, invalid_reason(exc))
    return await request_validation_exception_handler(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own answers (no such route, wrong method): a page in the console."""
    assert isinstance(exc, StarletteHTTPException)
    if in_console(request):
        return problem_page(request, exc.status_code, str(exc.detail), dict(exc.headers or {}))
    return await http_exception_handler(request, exc)


async def _sign_in_first(_: Request, exc: Exception) -> RedirectResponse:
    """A console page without a session: to the sign-in form, never a bare 401."""
    return RedirectResponse("/ui/sign-in", status_code=303)


def _unavailable(request: Request) -> Response:
    # The store failed, not the sender: 503 makes Replicate retry the delivery.
    reason = "store unavailable, retry later"
    if in_console(request):
        return problem_page(request, 503, reason)
    return JSONResponse({"error": reason}, 503)


async def _writer_failed(request: Request, exc: Exception) -> Response:
    """The writer process could not commit a delivery (its reason came up the pipe) or died."""
    log.warning("writer process: %s", exc)
    return _unavailable(request)


async def _store_down(request: Request, exc: Exception) -> Response:
    """A read in this process failed: the database is unreachable or refused the query."""
    log.warning("store error: %s", " ".join(str(exc).split())[:300])
    return _unavailable(request)
