"""The console's pages: sign in and out, the predictions, one prediction, its files.

Every page but the sign-in form needs the session cookie (`session`); without one it
redirects there. Forms that change state carry the session's CSRF token.
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as FastApiPath
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from receiver import rules
from receiver.context import AppContext, Context, RefusedError
from receiver.file_response import prediction_file
from receiver.paging import page_cursor, parse_cursor, status_filter
from receiver.reads import iso
from receiver.routes import MAX_FILES
from receiver.ui.session import (
    COOKIE,
    LIFETIME_SECONDS,
    csrf_token,
    new_session,
    ui_key,
    valid_csrf,
    valid_session,
)
from receiver.ui.views import prediction_rows

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
MAX_FORM_BYTES = 4096
PAGE_SIZE = 50
# Nothing from another origin, no script at all, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

ui_routes = APIRouter(prefix="/ui")


class SignInRequiredError(Exception):
    """No valid session: the page answers with a redirect to the sign-in form."""


@dataclass(frozen=True)
class Session:
    key: bytes
    cookie: str

    @property
    def csrf(self) -> str:
        return csrf_token(self.key, self.cookie)


def _token(ctx: AppContext) -> str:
    """The read token, which the console asks for once and then proves with its cookie."""
    token = ctx.settings.receiver_api_token
    if token is None:
        raise RefusedError(403, "console disabled: set RECEIVER_API_TOKEN")
    return token.get_secret_value()


async def session(request: Request, ctx: Context) -> Session:
    key = ui_key(_token(ctx))
    cookie = request.cookies.get(COOKIE)
    if cookie is None or not valid_session(key, cookie, ctx.clock()):
        raise SignInRequiredError()
    return Session(key, cookie)


Signed = Annotated[Session, Depends(session)]


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form; first value of each field."""
    body = b""
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_FORM_BYTES:
            raise RefusedError(413, f"form over {MAX_FORM_BYTES} bytes")
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def _page(request: Request, name: str, code: int = 200, **context: Any) -> Response:
    response = templates.TemplateResponse(request, name, context, status_code=code)
    response.headers.update(SECURITY_HEADERS)
    return response


def _redirect(to: str) -> RedirectResponse:
    return RedirectResponse(to, status_code=303, headers=SECURITY_HEADERS)


@ui_routes.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    return _page(request, "sign_in.html", error=None)


@ui_routes.post("/sign-in")
async def sign_in(request: Request, ctx: Context) -> Response:
    configured = _token(ctx)
    given = (await _form(request)).get("token", "")
    if not hmac.compare_digest(given.encode(), configured.encode()):
        return _page(request, "sign_in.html", code=403, error="Wrong token.")
    response = _redirect("/ui/")
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
    form = await _form(request)
    if not valid_csrf(signed.key, signed.cookie, form.get("csrf", "")):
        raise RefusedError(403, "the form's CSRF token is missing or wrong")
    response = _redirect("/ui/sign-in")
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
    before = parse_cursor(cursor) if cursor else None
    rows = await asyncio.to_thread(
        prediction_rows, ctx.store.reads.engine, chosen, search or None, PAGE_SIZE, before
    )
    last = rows[-1] if len(rows) == PAGE_SIZE else None
    return _page(
        request,
        "predictions.html",
        csrf=signed.csrf,
        rows=[_row_view(row) for row in rows],
        statuses=rules.STATUSES,
        status=chosen or "",
        search=search,
        next_cursor=page_cursor(last["created_at"], last["id"]) if last else None,
        running=any(not row["terminal"] for row in rows),
    )


def _row_view(row: dict[str, Any]) -> dict[str, Any]:
    seconds = row["updated_at"] - row["created_at"] if row["terminal"] else None
    return {
        **row,
        "created": iso(row["created_at"]),
        "duration": f"{seconds:.1f} s" if seconds is not None else "running",
    }


@ui_routes.get("/predictions/{prediction_id}")
async def prediction_page(
    prediction_id: str, request: Request, ctx: Context, signed: Signed
) -> Response:
    found = None
    if rules.valid_id(prediction_id):
        found = await asyncio.to_thread(ctx.store.prediction, prediction_id)
    if found is None:
        return _page(request, "missing.html", code=404, csrf=signed.csrf, what=prediction_id)
    return _page(
        request,
        "prediction.html",
        csrf=signed.csrf,
        prediction=found,
        running=found.get("status") not in rules.TERMINAL,
    )


@ui_routes.get("/predictions/{prediction_id}/files/{n}")
async def file_download(
    prediction_id: str,
    n: Annotated[int, FastApiPath(ge=0, le=MAX_FILES)],
    ctx: Context,
    signed: Signed,
) -> FileResponse:
    return await asyncio.to_thread(prediction_file, ctx.store, prediction_id, n)


@ui_routes.get("/style.css")
async def style() -> FileResponse:
    return FileResponse(HERE / "style.css", media_type="text/css", headers=SECURITY_HEADERS)
