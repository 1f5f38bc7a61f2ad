"""The predictions list's paging and filter, shared by the read API and the console: a cursor
is the (created_at, id) of a page's last item, opaque to clients and checked on its way back."""

from __future__ import annotations

import base64
import binascii
import math

import orjson

from receiver import rules
from receiver.context import RefusedError

MAX_CURSOR = 1024  # characters; ours are under 400


def page_cursor(created_at: float, pid: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([created_at, pid])).decode()


def parse_cursor(cursor: str) -> tuple[float, str]:
    """Exactly what `page_cursor` makes, `[finite number, prediction id]`, or a 400: the cursor
    comes from the client, and whatever it holds must not reach the database."""
    refused = RefusedError(400, "cursor is not one this API returned")
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(cursor[:MAX_CURSOR].encode()))
    except (orjson.JSONDecodeError, ValueError, binascii.Error) as exc:
        raise refused from exc
    if not (isinstance(decoded, list) and len(decoded) == 2):
        raise refused
    created_at = decoded[0]
    pid = decoded[1]
    if type(created_at) not in (int, float) or not math.isfinite(created_at):
        raise refused
    if not isinstance(pid, str) or not rules.valid_id(pid):
        raise refused
    return float(created_at), pid


def status_filter(status: str | None) -> str | None:
    if status is not None and status not in rules.STATUSES:
        raise RefusedError(400, f"status must be one of: {', '.join(rules.STATUSES)}")
    return status
