"""What the stand-in for Replicate knows: models, versions, deployments, predictions, files.

Shared by its HTTP routes (standin/api_*.py) and its dispatcher (standin/dispatch.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from standin.webhooks import RETRY_DELAYS, Attempt


def iso(at: float) -> str:
    """A time as Replicate writes it: ISO 8601, microseconds, UTC as `Z`."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso(value: str) -> float:
    """An ISO 8601 time (`Z` or an offset) as a timestamp; ValueError if it is not one."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def seconds_between(start: str, end: str) -> float:
    return parse_iso(end) - parse_iso(start)


class ProblemError(Exception):
    """An answer in Replicate's error shape: RFC 7807 problem details."""

    def __init__(
        self, status: int, title: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers or {}


def not_found(what: str) -> ProblemError:
    return ProblemError(404, "Not found", f"{what} could not be found.")


@dataclass
class StandIn:
    """What the stand-in knows. Mutated on its event loop; tests read it from theirs."""

    token: str
    secret: str
    base_url: str = "http://127.0.0.1"
    cog_url: str | None = None  # where predictions run; None: they stay `starting`
    owner: str = "local"
    retry_delays: tuple[float, ...] = RETRY_DELAYS
    deadline_seconds: float = 30 * 60  # Replicate's limit for a prediction
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # newest first
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    uploaded_at: dict[str, float] = field(default_factory=dict)  # by file key, on `clock`
    # Replicate's limits: creations a minute per account (a sliding minute, as the stand-in
    # counts it), and an output file is gone an hour after it was made.
    creations_per_minute: int = 600
    output_retention_seconds: float = 3600
    clock: Callable[[], float] = time.time  # tests move it to age files and the window
    creations: deque[float] = field(default_factory=deque)
    attempts: list[Attempt] = field(default_factory=list)
    throttled: int = 0  # answer this many API requests with 429, as a busy Replicate would
    # A gateway's 502s, which say nothing of what happened: this many creations are made and
    # answered 502 anyway; this many API requests are answered 502 and never reach Replicate.
    lost_answers: int = 0
    gateway_errors: int = 0
    # Predictions it picks fail before the model sees them, as Replicate's interrupted ones do.
    interrupt: Callable[[dict[str, Any]], bool] | None = None
    hold_completions: bool = False  # keep terminal states from Cog until release_completions()
    changed: threading.Condition = field(default_factory=threading.Condition)
    held: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # Cog's, not applied
    loop: asyncio.AbstractEventLoop | None = None  # the stand-in's, set when it starts
    apply_held: Callable[[], None] | None = None  # its dispatcher's, run on that loop

    def add_version(self, model: str, openapi_schema: dict[str, Any]) -> str:
        """Register a version of `model` (created if new), as `cog push` does; returns its id."""
        owner, name = model.split("/", 1)
        canonical = json.dumps(openapi_schema, sort_keys=True).encode()
        version_id = hashlib.sha256(canonical).hexdigest()
        self.models.setdefault(model, _model(owner, name, self.base_url))
        versions = self.versions.setdefault(model, [])
        if not any(v["id"] == version_id for v in versions):
            versions.insert(0, _version(version_id, openapi_schema, self.now_iso()))
        return version_id

    def throttle_creation(self) -> float | None:
        """Count one creation now; or, at the limit, the seconds until the window has room."""
        now = self.clock()
        while self.creations and self.creations[0] <= now - 60:
            self.creations.popleft()
        if len(self.creations) >= self.creations_per_minute:
            return self.creations[0] + 60 - now
        self.creations.append(now)
        return None

    def now_iso(self) -> str:
        """Now on the stand-in's clock: predictions' times follow it, as tests move it."""
        return iso(self.clock())

    def put(self, prediction_id: str, status: str, **fields: Any) -> dict[str, Any]:
        """Create or replace a prediction, filling the fields Replicate always returns."""
        body = {
            "id": prediction_id,
            "model": "owner/model",
            "version": "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa",
            "input": {},
            "output": None,
            "logs": "",
            "error": None,
            "status": status,
            "data_removed": False,
            "created_at": "2026-11-23T08:00:00.000Z",
            "source": "api",
            "urls": self._urls(prediction_id),
            **fields,
        }
        self.predictions[prediction_id] = body
        return body

    def _urls(self, prediction_id: str) -> dict[str, str]:
        return {
            "get": f"{self.base_url}/v1/predictions/{prediction_id}",
            "cancel": f"{self.base_url}/v1/predictions/{prediction_id}/cancel",
            "web": f"{self.base_url}/p/{prediction_id}",
        }

    def wait_until(self, condition: Callable[[StandIn], bool], timeout: float) -> bool:
        """Block until `condition` holds after some change here, or `timeout` passes."""
        with self.changed:
            return self.changed.wait_for(lambda: condition(self), timeout)

    def touched(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def release_completions(self) -> None:
        """Apply the terminal states held back by `hold_completions` (from any thread)."""
        assert self.loop is not None
        assert self.apply_held is not None
        self.loop.call_soon_threadsafe(self.apply_held)


def _model(owner: str, name: str, base_url: str) -> dict[str, Any]:
    return {
        "url": f"{base_url}/{owner}/{name}",
        "owner": owner,
        "name": name,
        "description": "sentence-transformers/all-MiniLM-L6-v2 text embeddings",
        "visibility": "private",
        "github_url": None,
        "paper_url": None,
        "license_url": None,
        "run_count": 0,
        "cover_image_url": None,
        "default_example": None,
        "is_official": False,
    }


def _version(version_id: str, openapi_schema: dict[str, Any], created_at: str) -> dict[str, Any]:
    return {
        "id": version_id,
        "created_at": created_at,
        "cog_version": "0.23.1",
        "openapi_schema": openapi_schema,
    }
