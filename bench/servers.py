"""Servers under test, each started as its own process and waited for until it answers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from localcog import REPO
from localcog.polling import PollTimeoutError, poll


def serve(command: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )

    def healthy() -> bool | None:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        except httpx.TransportError:
            return None
        return True if response.status_code == 200 else None

    try:
        poll(healthy, timeout=60, interval=0.05, what=f"{command[2]} start")
    except PollTimeoutError:
        process.kill()
        raise SystemExit(f"bench: {command[2]} did not start; see {log}") from None
    return process
