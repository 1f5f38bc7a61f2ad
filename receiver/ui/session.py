"""The console's sign-in: a cookie that proves the read token was given, and CSRF tokens.

Nothing is stored server side. The cookie holds its expiry and an HMAC of it, keyed by a key
derived from RECEIVER_API_TOKEN: changing the token signs everyone out. A form that changes
state carries a CSRF token, an HMAC of the session cookie under the same key, so a page on
another origin (which can neither read the cookie nor this page) cannot forge one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

COOKIE = "receiver_session"
LIFETIME_SECONDS = 12 * 3600


def ui_key(read_token: str) -> bytes:
    return hmac.new(read_token.encode(), b"receiver console v1", hashlib.sha256).digest()


def _mac(key: bytes, purpose: str, value: str) -> str:
    digest = hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def new_session(key: bytes, now: float) -> str:
    expires = str(int(now + LIFETIME_SECONDS))
    return f"{expires}.{_mac(key, 'session', expires)}"


def valid_session(key: bytes, cookie: str, now: float) -> bool:
    """Whatever the cookie holds (it comes from the client: non-ASCII digits, a huge number,
    junk) is an answer, never an exception."""
    expires, _, mac = cookie.partition(".")
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
        return False
    if int(expires) <= now:
        return False
    return hmac.compare_digest(mac.encode(), _mac(key, "session", expires).encode())


def csrf_token(key: bytes, cookie: str) -> str:
    return _mac(key, "csrf", cookie)


def valid_csrf(key: bytes, cookie: str, token: str) -> bool:
    return hmac.compare_digest(token.encode(), csrf_token(key, cookie).encode())
