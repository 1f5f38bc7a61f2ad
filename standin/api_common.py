"""What the stand-in's routers share: its memory and dispatcher on `app.state`, JSON bodies.

The routers live in separate modules (standin/api_*.py), so they reach the state that
`create_standin` keeps on the application through these dependencies rather than through
closures over one long function.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from standin.dispatch import Dispatcher
from standin.memory import ProblemError, StandIn


def memory_of(request: Request) -> StandIn:
    """The stand-in's memory, set on `app.state` when the app is built."""
    memory: StandIn = request.app.state.memory
    return memory


def dispatcher_of(request: Request) -> Dispatcher:
    """The dispatcher, set on `app.state` by the lifespan: it needs the running event loop."""
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


Memory = Annotated[StandIn, Depends(memory_of)]
Dispatch = Annotated[Dispatcher, Depends(dispatcher_of)]


async def json_body(request: Request) -> Any:
    """The request's JSON body; Replicate answers a body that is not JSON with a 400 problem."""
    try:
        return await request.json()
    except ValueError as exc:
        raise ProblemError(400, "Bad request", "the body is not JSON") from exc


def version_of(memory: StandIn, model: str, version_id: str) -> dict[str, Any]:
    """A version named in a request body: unknown ones are a 422, as Replicate answers them."""
    for version in memory.versions.get(model, []):
        if version["id"] == version_id:
            return version
    raise ProblemError(422, "Invalid request", f"version {version_id} of {model} does not exist")


def gateway_error(status: int, reason: str) -> HTMLResponse:
    """What a gateway in front of Replicate answers when it gives up: HTML, no problem JSON,
    nothing about whether the request was carried out."""
    page = f"<html><body><h1>{status} {reason}</h1></body></html>"
    return HTMLResponse(page, status)
