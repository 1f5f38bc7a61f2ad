"""Helpers for the console's tests: sign in over HTTP and send the session cookie by hand.

httpx, like any cookie jar, keeps a `Secure` cookie off plain http, even on loopback (a
browser does send it there), so the tests carry it in the Cookie header themselves."""

from __future__ import annotations

import re

import httpx

from receiver.ui.session import COOKIE
from tests.support.receiving import READ_TOKEN


def sign_in(url: str, token: str = READ_TOKEN) -> httpx.Response:
    return httpx.post(f"{url}/ui/sign-in", data={"token": token})


def session_cookie(url: str) -> str:
    """The session cookie's value after a successful sign-in."""
    signed_in = sign_in(url)
    assert signed_in.status_code == 303, signed_in.text
    found = re.match(rf"{COOKIE}=([^;]+)", signed_in.headers["set-cookie"])
    assert found, signed_in.headers["set-cookie"]
    return found[1]


def page(url: str, path: str, cookie: str) -> httpx.Response:
    return httpx.get(f"{url}{path}", headers={"cookie": f"{COOKIE}={cookie}"})


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no sign-out form"
    return found[1]
