"""The ship path's calls to Replicate, through the official `replicate` client (1.0.x).

The client honours REPLICATE_API_TOKEN and REPLICATE_BASE_URL, so the same scripts run against
Replicate or the local stand-in. Its known gaps are handled here, once:
- it retries 429 only for GET: creating a prediction or a deployment and updating a deployment
  get their own backoff (`with_backoff`);
- 1.0.7 fails to parse a prediction whose status is `aborted`: predictions are read as raw JSON;
- `prediction.wait()` has no deadline: callers poll with one.
Every failure becomes a `ShipError` whose message is one readable line.

`receiver/replicate_api.py` does the same job for the receiver, deliberately apart: the
receiver ships on its own and imports nothing from the rest of the repository.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError
from replicate.client import Client
from replicate.exceptions import ReplicateError

T = TypeVar("T")
# Also in receiver/rules.py: the receiver ships on its own and imports nothing from here.
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})


class ShipError(Exception):
    """A failure to report as one line and a non-zero exit."""


def client() -> Client:
    token = os.environ.get("REPLICATE_API_TOKEN")
    if not token:
        raise ShipError("REPLICATE_API_TOKEN is not set (https://replicate.com/account/api-tokens)")
    return Client(api_token=token)


def api_base() -> str:
    return os.environ.get("REPLICATE_BASE_URL") or "https://api.replicate.com"


@contextmanager
def reported(action: str) -> Iterator[None]:
    """Turn the client's exceptions (several kinds, some multi-line) into one ShipError line."""
    try:
        yield
    except ReplicateError as exc:
        reason = exc.detail or exc.title or "no detail"
        raise ShipError(f"{action}: Replicate answered {exc.status}: {reason}") from exc
    except httpx.HTTPError as exc:
        raise ShipError(f"{action}: cannot reach {api_base()}: {exc!r}") from exc
    except ValidationError as exc:
        raise ShipError(f"{action}: unexpected answer from Replicate: {exc.errors()[0]}") from exc


def is_missing(exc: ShipError) -> bool:
    cause = exc.__cause__
    return isinstance(cause, ReplicateError) and cause.status == 404


def with_backoff(
    call: Callable[[], T],
    attempts: int = 6,
    base: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Retry `call` while Replicate answers 429, with exponential backoff and full jitter."""
    for attempt in range(attempts):
        try:
            return call()
        except ReplicateError as exc:
            if exc.status != 429 or attempt == attempts - 1:
                raise
            sleep(random.uniform(0, base * 2**attempt))
    raise AssertionError("unreachable")


def raw_prediction(api: Client, prediction_id: str) -> dict[str, Any]:
    """A prediction as raw JSON (the client's model rejects `aborted`)."""
    body: dict[str, Any] = api._request("GET", f"/v1/predictions/{prediction_id}").json()
    return body


def latest_version(api: Client, model: str) -> str:
    with reported(f"model {model}"):
        found = api.models.get(model).latest_version
    if found is None:
        raise ShipError(f"model {model} has no version yet: run `make push` first")
    return str(found.id)


def run_cli(prog: str, body: Callable[[], str]) -> int:
    """A script's exit: its result line and 0, or its error as one line and 1."""
    try:
        print(body())
    except ShipError as exc:
        print(f"{prog}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0
