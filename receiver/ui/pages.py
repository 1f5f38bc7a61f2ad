"""What every console page shares: the session dependency, forms, CSRF, rendering with the
security headers, redirects."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
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
    # Same-origin requests keep their Origin (the sign-in form's check reads it in browsers
    # that send no Sec-Fetch-Site); nothing leaves for another origin.
    "Referrer-Policy": "same-origin",
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


def same_site(request: Request) -> bool:
    """Was this form posted by a page of this site? Current browsers say so in Sec-Fetch-Site;
    older ones only in Origin (compared with this request's own origin, as the proxy states
    it when trusted). A client that sends neither (curl, a script) is not a browser that
    another site's page could drive."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin == f"{request.url.scheme}://{request.url.netloc}"


def in_console(request: Request) -> bool:
    path = request.url.path
    return path == "/ui" or path.startswith("/ui/")


def problem_page(
    request: Request, status: int, reason: str, headers: dict[str, str] | None = None
) -> Response:
    """A refused console request as a page, not the API's JSON; never the input echoed back."""
    title = _phrase(status)
    response = render(request, "problem.html", status, status=status, title=title, reason=reason)
    response.headers.update(headers or {})
    return response


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Refused"


def invalid_reason(exc: RequestValidationError) -> str:
    """What was wrong, by field (FastAPI's own answer also quotes what was sent)."""
    problems = []
    for error in exc.errors()[:3]:
        field = ".".join(str(part) for part in error.get("loc", ())[1:]) or "request"
        problems.append(f"{field}: {error.get('msg', 'invalid')}")
    return "; ".join(problems) or "invalid request"


def see_other(to: str) -> RedirectResponse:
    return RedirectResponse(to, status_code=303, headers=SECURITY_HEADERS)


def check_csrf(signed: Session, form: dict[str, str]) -> None:
    if not valid_csrf(signed.key, signed.cookie, form.get("csrf", "")):
        raise RefusedError(403, "the form's CSRF token is missing or wrong")
