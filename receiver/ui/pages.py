"""What every console page shares: the session dependency, forms, CSRF, rendering with the
security headers, redirects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from receiver.context import AppContext, Context, RefusedError
from receiver.ui.health import health
from receiver.ui.session import COOKIE, csrf_token, ui_key, valid_csrf, valid_session

HERE = Path(__file__).parent
# Read-only after import, like a router: the templates and one filter for ids in URL paths
# (Jinja's urlencode leaves "/" alone; an id is one path segment).
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["segment"] = lambda value: quote(str(value), safe="")
MAX_FORM_BYTES = 4096
# Nothing from another origin, no script at all, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class SignInRequiredError(Exception):
    """No valid session: the page answers with a redirect to the sign-in form."""


@dataclass(frozen=True)
class Session:
    """A signed-in browser: its cookie, and the key that signed it (for its CSRF token)."""

    key: bytes
    cookie: str

    @property
    def csrf(self) -> str:
        return csrf_token(self.key, self.cookie)


def read_token(ctx: AppContext) -> str:
    """The read token, which the console asks for once and then proves with its cookie."""
    token = ctx.settings.receiver_api_token
    if token is None:
        raise RefusedError(403, "console disabled: set RECEIVER_API_TOKEN")
    return token.get_secret_value()


async def session(request: Request, ctx: Context) -> Session:
    key = ui_key(read_token(ctx))
    cookie = request.cookies.get(COOKIE)
    if cookie is None or not valid_session(key, cookie, ctx.clock()):
        raise SignInRequiredError()
    return Session(key, cookie)


Signed = Annotated[Session, Depends(session)]


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form; first value of each field."""
    body = b""
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_FORM_BYTES:
            raise RefusedError(413, f"form over {MAX_FORM_BYTES} bytes")
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def render(request: Request, name: str, code: int = 200, **context: Any) -> Response:
    response = templates.TemplateResponse(request, name, context, status_code=code)
    response.headers.update(SECURITY_HEADERS)
    return response


async def signed_page(
    request: Request, ctx: AppContext, signed: Session, name: str, code: int = 200, **context: Any
) -> Response:
    """A page for a signed-in user: with the session's CSRF token and the health line."""
    state = await health(ctx)
    return render(request, name, code, csrf=signed.csrf, health=state, **context)


def see_other(to: str) -> RedirectResponse:
    return RedirectResponse(to, status_code=303, headers=SECURITY_HEADERS)


def check_csrf(signed: Session, form: dict[str, str]) -> None:
    if not valid_csrf(signed.key, signed.cookie, form.get("csrf", "")):
        raise RefusedError(403, "the form's CSRF token is missing or wrong")
