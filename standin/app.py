"""A local stand-in for the part of Replicate's HTTP API the ship path and the receiver use.

Replicate cannot be reached from CI, so `make demo` and the tests point the real `replicate`
client at this server (REPLICATE_BASE_URL). It keeps models and versions, deployments and
predictions; it runs predictions on a local Cog server (`python -m cog.server.http`), one at a
time, as a deployment with one instance would; and it sends webhooks as Replicate does (see
standin/webhooks.py). Responses follow Replicate's OpenAPI schema: tests/standin/
check them against tests/data/replicate_openapi.json.

Each part of the API is one router over the state kept on `app.state`: standin/api_models.py,
standin/api_deployments.py, standin/api_predictions.py. Cog talks back on routes Replicate
does not have (standin/api_cog.py), outside /v1 and without the API token: `POST /_cog/{id}`
(Cog's webhooks), `PUT /_uploads/{name}` (Cog's file uploads, served again from
`GET /files/{key}/{name}`, as replicate.delivery serves them).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from standin import api_cog, api_deployments, api_models, api_predictions
from standin.api_common import gateway_error
from standin.dispatch import Dispatcher
from standin.memory import ProblemError, StandIn
from standin.webhooks import Attempt, WebhookSender


def create_standin(standin: StandIn) -> FastAPI:
    """The stand-in's app over `standin`, kept on `app.state.memory` for the routers."""
    app = FastAPI(title="Replicate stand-in", lifespan=_lifespan)
    app.state.memory = standin
    app.exception_handler(ProblemError)(_problem)
    app.middleware("http")(_authenticate)
    for part in (api_models, api_deployments, api_predictions, api_cog):
        app.include_router(part.router)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the dispatcher on the server's event loop, which the memory must know to accept
    `release_completions()` from the tests' threads; stop it and its HTTP clients at the end."""
    standin: StandIn = app.state.memory

    def record(attempt: Attempt) -> None:
        standin.attempts.append(attempt)
        standin.touched()

    sender = WebhookSender(standin.secret, lambda pid: standin.predictions[pid], record)
    dispatcher = Dispatcher(standin, sender)
    app.state.dispatcher = dispatcher
    standin.loop = asyncio.get_running_loop()
    standin.apply_held = dispatcher.release
    task = asyncio.create_task(dispatcher.run())
    yield
    task.cancel()
    await sender.close()
    await dispatcher.close()


async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
    """Errors in Replicate's shape: RFC 7807 problem details."""
    body = {"title": exc.title, "detail": exc.detail, "status": exc.status}
    return JSONResponse(body, exc.status, headers=exc.headers)


async def _authenticate(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """The API token on /v1 routes, and the 429s and 502s a test asks for; Cog's routes
    outside /v1 need no token, as Cog knows none."""
    if not request.url.path.startswith("/v1/"):
        return await call_next(request)
    standin: StandIn = request.app.state.memory
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme != "Bearer" or not hmac.compare_digest(token.encode(), standin.token.encode()):
        detail = "You did not pass a valid authentication token"
        return JSONResponse({"title": "Unauthenticated", "detail": detail, "status": 401}, 401)
    if standin.gateway_errors > 0:
        standin.gateway_errors -= 1
        return gateway_error(502, "Bad Gateway")
    if standin.throttled > 0:
        standin.throttled -= 1
        detail = "Request was throttled. Expected available in 1 second."
        body = {"title": "Too Many Requests", "detail": detail, "status": 429}
        return JSONResponse(body, 429, headers={"Retry-After": "1"})
    return await call_next(request)
