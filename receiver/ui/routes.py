"""The console's pages: sign in and out, the predictions, one prediction, its files.

Every page but the sign-in form needs the session cookie (`session`); without one it
redirects there. Forms that change state carry the session's CSRF token.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated, Any, Literal, get_args

import orjson
from fastapi import APIRouter, Query, Request
from fastapi import Path as FastApiPath
from fastapi.responses import FileResponse, Response

from receiver import rules
from receiver.context import Context, RefusedError
from receiver.file_response import prediction_file
from receiver.paging import page_cursor, parse_cursor, status_filter
from receiver.reads import iso
from receiver.routes import MAX_FILES, check_token
from receiver.ui.health import HOUR
from receiver.ui.pages import (
    HERE,
    SECURITY_HEADERS,
    Signed,
    check_csrf,
    read_form,
    read_token,
    render,
    same_site,
    see_other,
    signed_page,
)
from receiver.ui.session import COOKIE, LIFETIME_SECONDS, new_session, ui_key
from receiver.ui.vectors import drawn
from receiver.ui.views import file_rows, prediction_rows

PAGE_SIZE = 50
MAX_REFUSALS = 200  # shown at once; the count says how many more there were
FileState = Literal["queued", "running", "done", "dead", "refused"]
FILE_STATES = get_args(FileState)
ui_routes = APIRouter(prefix="/ui")


@ui_routes.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    return render(request, "sign_in.html", error=None)


@ui_routes.post("/sign-in")
async def sign_in(request: Request, ctx: Context) -> Response:
    configured = read_token(ctx)
    if not same_site(request):  # another site's page must not spend this browser's tries
        ctx.metrics.token_checks.labels("console", "cross_site").inc()
        return render(request, "sign_in.html", code=403, error="Sign in from this site's form.")
    given = (await read_form(request)).get("token", "")
    if not given:  # no guess (an empty field, another encoding): nothing to count
        return render(request, "sign_in.html", code=400, error="Give the read token.")
    checked = check_token(request, ctx, given, configured, "console")
    if checked.outcome == "limited":
        wait = checked.retry_after
        error = f"Too many wrong tokens from your address: try again in {wait} s."
        response = render(request, "sign_in.html", code=429, error=error)
        response.headers["Retry-After"] = str(wait)
        return response
    if checked.outcome == "wrong":
        return render(request, "sign_in.html", code=403, error="Wrong token.")
    response = see_other("/ui/")
    response.set_cookie(
        COOKIE,
        new_session(ui_key(configured), ctx.clock()),
        max_age=LIFETIME_SECONDS,
        path="/ui",
        secure=True,
        httponly=True,
        samesite="strict",
    )
    return response


@ui_routes.post("/sign-out")
async def sign_out(request: Request, signed: Signed) -> Response:
    check_csrf(signed, await read_form(request))
    response = see_other("/ui/sign-in")
    response.delete_cookie(COOKIE, path="/ui", secure=True, httponly=True, samesite="strict")
    return response


@ui_routes.get("/")
async def predictions_page(
    request: Request,
    ctx: Context,
    signed: Signed,
    status: Annotated[str, Query(max_length=32)] = "",
    search: Annotated[str, Query(max_length=255)] = "",
    cursor: Annotated[str, Query(max_length=1024)] = "",
) -> Response:
    chosen = status_filter(status or None)
    if search and not rules.valid_id(search):  # as the store keeps ids: printable, no NUL
        raise RefusedError(400, "search: an id or its start, in printable characters")
    before = parse_cursor(cursor) if cursor else None
    rows = await asyncio.to_thread(
        prediction_rows, ctx.store.reads.engine, chosen, search or None, PAGE_SIZE, before
    )
    last = rows[-1] if len(rows) == PAGE_SIZE else None
    return await signed_page(
        request,
        ctx,
        signed,
        "predictions.html",
        rows=[_row_view(row) for row in rows],
        statuses=rules.STATUSES,
        status=chosen or "",
        search=search,
        next_cursor=page_cursor(last["created_at"], last["id"]) if last else None,
        running=any(not row["terminal"] for row in rows),
    )


def _row_view(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "created": iso(row["created_at"]), "predict_time": _predict_time(row)}


def _predict_time(row: dict[str, Any]) -> str:
    """Replicate's own measure of how long the model ran, not the receiver's arrival times
    (which add queueing, cold boots and webhook delays). Without it (a body with no metrics,
    or stored before migration 0005), "~" and the span from its first delivery to its last."""
    if not row["terminal"]:
        return "running"
    seconds = row["predict_time"]
    if seconds is not None:
        return f"{seconds:.2f} s"
    seen = row["updated_at"] - row["created_at"]
    return f"~{seen:.1f} s" if seen > 0 else "—"  # one delivery: no span to show


@ui_routes.get("/predictions/{prediction_id}")
async def prediction_page(
    prediction_id: str, request: Request, ctx: Context, signed: Signed
) -> Response:
    found = None
    if rules.valid_id(prediction_id):
        found = await asyncio.to_thread(ctx.store.prediction, prediction_id)
    if found is None:
        return await signed_page(
            request, ctx, signed, "missing.html", code=404, kind="prediction", what=prediction_id
        )
    return await signed_page(
        request,
        ctx,
        signed,
        "prediction.html",
        prediction=found,
        error=_as_text(found.get("error")),
        times=_times(found),
        drawn=drawn(found.get("output")),
        running=found.get("status") not in rules.TERMINAL,
    )


def _as_text(value: object) -> str | None:
    """Replicate's error is a string; anything else a sender put there is shown as JSON."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _times(body: dict[str, Any]) -> list[tuple[str, str]]:
    """Replicate's own times for the prediction, those its body has."""
    shown = []
    for key, name in (
        ("created_at", "Created"),
        ("started_at", "Started"),
        ("completed_at", "Completed"),
    ):
        if isinstance(body.get(key), str):
            shown.append((name, body[key]))
    seconds = rules.predict_time(body)
    if seconds is not None:
        shown.append(("Predict time", f"{seconds:.3f} s"))
    return shown


@ui_routes.get("/predictions/{prediction_id}/files/{n}")
async def file_download(
    prediction_id: str,
    n: Annotated[int, FastApiPath(ge=0, le=MAX_FILES)],
    ctx: Context,
    signed: Signed,
) -> FileResponse:
    return await asyncio.to_thread(prediction_file, ctx.store, prediction_id, n)


@ui_routes.get("/files")
async def files_page(
    request: Request, ctx: Context, signed: Signed, state: FileState = "dead"
) -> Response:
    rows = await asyncio.to_thread(file_rows, ctx.store.reads.engine, state, PAGE_SIZE)
    return await signed_page(
        request, ctx, signed, "files.html", state=state, states=FILE_STATES, rows=rows
    )


@ui_routes.get("/refusals")
async def refusals_page(request: Request, ctx: Context, signed: Signed) -> Response:
    """The webhooks this process refused in the last hour, newest first."""
    recent = ctx.refusals.since(ctx.clock() - HOUR)
    rows = [{**asdict(refusal), "received": iso(refusal.at)} for refusal in recent[:MAX_REFUSALS]]
    return await signed_page(request, ctx, signed, "refusals.html", rows=rows, total=len(recent))


@ui_routes.get("/style.css")
async def style() -> FileResponse:
    cached = {**SECURITY_HEADERS, "Cache-Control": "max-age=300"}  # not again at each refresh
    return FileResponse(HERE / "style.css", media_type="text/css", headers=cached)
