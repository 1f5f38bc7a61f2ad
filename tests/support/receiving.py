"""Helpers for the receiver's tests: the webhook secret and read token, a clock the test moves,
prediction bodies, signed deliveries and authorized reads."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from receiver.signature import decode_secret, signed_headers

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = decode_secret(SECRET)
READ_TOKEN = "read-token-for-tests"


class Clock:
    """A clock the test can move; starts at the real time so signatures look current."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def prediction(pid: str, status: str, **fields: Any) -> dict[str, Any]:
    """A prediction body in Replicate's full shape."""
    return {
        "id": pid,
        "version": "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa",
        "status": status,
        "input": {"texts": ["hello"]},
        "output": None,
        "logs": "",
        "error": None,
        "metrics": {},
        "created_at": "2026-11-23T08:00:00.000Z",
        "urls": {"get": f"https://api.replicate.com/v1/predictions/{pid}"},
        **fields,
    }


def signed(
    body: bytes | dict[str, Any],
    msg_id: str | None = None,
    timestamp: float | None = None,
    key: bytes = KEY,
) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = str(int(time.time() if timestamp is None else timestamp))
    return raw, signed_headers(key, msg_id, ts, raw)


def deliver(url: str, body: bytes | dict[str, Any], **kw: Any) -> httpx.Response:
    raw, headers = signed(body, **kw)
    return httpx.post(f"{url}/webhooks/replicate", content=raw, headers=headers, timeout=30)


def read(url: str, path: str) -> httpx.Response:
    return httpx.get(f"{url}{path}", headers={"authorization": f"Bearer {READ_TOKEN}"}, timeout=30)


def on_sqlite(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A receiver process's environment: the test secret, an SQLite file and an output folder
    in tmp_path, and `extra` settings."""
    return {
        "REPLICATE_WEBHOOK_SECRET": SECRET,
        "RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "RECEIVER_OUTPUT_DIR": str(tmp_path / "out"),
        **extra,
    }
