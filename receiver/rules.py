"""How a delivery changes a prediction's recorded state.

Replicate delivers out of order and more than once. The rules: the first terminal state is
final; a non-terminal event never moves status backwards (starting < processing) and never
shortens `output` or `logs`. Both body shapes merge the same way: Replicate's full prediction
object and the smaller one a bare Cog server sends (id, status, output, logs, error, metrics).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

# Also in ship/api.py: the receiver ships on its own and imports nothing from the repository.
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
# Replicate's statuses, in lifecycle order: what the read API filters by. A delivery with any
# other short status is still stored as it came (Replicate may add one; losing it is worse).
STATUSES = ("starting", "processing", "succeeded", "failed", "canceled", "aborted")
# How deep a body may nest (the body itself is level 1). Every step after parsing must handle
# it: orjson encodes at most 255 levels, Python recursion stops near 1000, and an embedding
# output needs 3. Deeper bodies get a 400 that says so, at once, instead of a 503 later.
MAX_DEPTH = 64
_PROGRESS = {"starting": 0, "processing": 1}
# A predict_time beyond this (about 115 days) is junk, not a measurement: it is not kept.
MAX_PREDICT_TIME = 1e7
FILE_PREFIXES = ("https://", "http://", "data:")
_SCALARS = (float, int, bool, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)


def problem(body: object) -> str | None:
    """Why a body cannot be recorded, or None. Both id and status become indexed columns
    (and PostgreSQL text cannot even hold NUL), so both must be short printable strings."""
    if not isinstance(body, dict):
        return "body is not a JSON object"
    pid = body.get("id")
    if not isinstance(pid, str) or not valid_id(pid) or "/" in pid:
        # no "/": an id is one segment of the read API's and the console's paths
        return "body has no prediction id (1-255 printable characters, no '/')"
    status = body.get("status", "")
    if not isinstance(status, str) or len(status) > 32 or not status.isprintable():
        return "status is not a short printable string"
    if too_deep(body, MAX_DEPTH):
        return f"body nested deeper than {MAX_DEPTH} levels"
    return None


def valid_id(text: str) -> bool:
    """Could this be a stored prediction id? 1-255 printable characters. (Ingest also refuses
    "/" now; ids stored before still page, and are still searched for.)"""
    return 1 <= len(text) <= 255 and text.isprintable()


def too_deep(value: object, limit: int) -> bool:
    """Whether containers nest more than `limit` levels. Iterative, so any depth the parser
    allowed is measured without recursion; rows of numbers are passed over at C speed."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        if _SCALAR_TYPES.issuperset(map(type, children)):
            continue
        stack.extend((child, depth + 1) for child in children if type(child) not in _SCALARS)
    return False


def is_terminal(body: dict[str, Any]) -> bool:
    return body.get("status") in TERMINAL


def predict_time(body: dict[str, Any]) -> float | None:
    """Replicate's `metrics.predict_time` (seconds the model ran), if the body has a usable one."""
    metrics = body.get("metrics")
    if not isinstance(metrics, dict):
        return None
    seconds = metrics.get("predict_time")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return None
    if not 0 <= seconds <= MAX_PREDICT_TIME:  # NaN too: orjson parses none, a caller might
        return None
    return float(seconds)


def _size(value: object) -> int:
    """How much of an output or log a state holds: the longer one wins a merge."""
    if isinstance(value, (str, list, dict)):
        return len(value)
    if value is None:
        return 0
    return 1


@dataclass(frozen=True)
class Merge:
    """The prediction body to keep after a delivery, and where it came from.

    `source` lets the store skip writing a body that did not change ("current") and keep a
    delivery's original bytes when its body is kept as is ("incoming"), without comparing
    large outputs.
    """

    body: dict[str, Any]
    source: Literal["current", "incoming", "merged"]


def merge(current: dict[str, Any] | None, incoming: dict[str, Any]) -> Merge:
    """The body to keep after `incoming` arrives on top of `current`."""
    if current is None:
        return Merge(incoming, "incoming")
    if is_terminal(current):
        return Merge(current, "current")
    if is_terminal(incoming):
        # Usually a full object that covers every key we hold: keep it as is.
        if current.keys() <= incoming.keys():
            return Merge(incoming, "incoming")
        return Merge({**current, **incoming}, "merged")
    merged = {**current, **incoming}
    if _PROGRESS.get(current.get("status", ""), -1) > _PROGRESS.get(incoming.get("status", ""), -1):
        merged["status"] = current["status"]
    for key in ("output", "logs"):
        if _size(current.get(key)) > _size(incoming.get(key)):
            merged[key] = current[key]
    return Merge(merged, "merged")


def _collect(value: object, found: list[str]) -> None:
    """Append every string in `value` that looks like a file, depth first, in order.

    Written for outputs of thousands of floats: numbers are skipped with one type test each,
    without a generator frame per element.
    """
    if isinstance(value, str):
        if value.startswith(FILE_PREFIXES):
            found.append(value)
        return
    if isinstance(value, dict):
        items: Iterable[object] = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return
    if _SCALAR_TYPES.issuperset(map(type, items)):  # a row of numbers: skipped at C speed
        return
    for item in items:
        if type(item) not in _SCALARS:
            _collect(item, found)


def output_files(output: object) -> list[str]:
    """Every file reference in an output, in order: https URLs and data: URIs."""
    found: list[str] = []
    _collect(output, found)
    return found


class AllowList:
    """May this output be fetched? data: URIs carry their own bytes. A plain host entry allows
    https on that host and its subdomains; an entry with a scheme (`http://127.0.0.1:9000`, for
    a local stand-in) allows exactly that scheme, host and port. Entries are parsed once: an
    output of 200 000 files is checked 200 000 times inside the transaction that stores it."""

    def __init__(self, hosts: list[str]) -> None:
        self.origins: set[tuple[str, str | None, int | None]] = set()
        self.domains: list[str] = []
        for entry in hosts:
            if "://" in entry:
                allowed = urlsplit(entry)
                self.origins.add((allowed.scheme, allowed.hostname, allowed.port))
            else:
                self.domains.append(entry)
        self.suffixes = tuple("." + domain for domain in self.domains)

    def allows(self, url: str) -> bool:
        if url.startswith("data:"):
            return True
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        host = (parts.hostname or "").lower()
        if (parts.scheme, host, port) in self.origins:
            return True
        if parts.scheme != "https":
            return False
        return host in self.domains or host.endswith(self.suffixes)
