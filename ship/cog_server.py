"""Run the model under Cog's own HTTP server (coglet), without Docker.

This is how `make demo`, the benchmarks and the tests run the predictor: the same
server and input validation as the built image, started from the repository.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
SETTLED = {"READY", "SETUP_FAILED", "DEFUNCT"}


class CogServerError(Exception):
    """The server exited or did not settle in time."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class CogServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/health-check", timeout=5).json()
        return body

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_settled(self, timeout: float) -> dict[str, Any]:
        """Poll /health-check until setup has finished one way or the other."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CogServerError(f"cog server exited with {self.process.returncode}")
            try:
                health = self.health()
                if health.get("status") in SETTLED:
                    return health
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.05)
        raise CogServerError(f"cog server not settled after {timeout:.0f} s")


def server_env(port: int, runner: str, extra: Mapping[str, str]) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        # coglet's worker runs the `python` on PATH: it must be ours, with coglet installed.
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "COG_PREDICT_TYPE_STUB": runner,
        "PORT": str(port),
        **extra,
    }


@contextmanager
def cog_server(
    log_path: Path,
    *,
    runner: str = "predict.py:Runner",
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO,
    ready_timeout: float = 180,
    require_ready: bool = True,
    args: Sequence[str] = (),
) -> Iterator[CogServer]:
    """Start `python -m cog.server.http` on a free loopback port; stop it on exit."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1", *args],
            cwd=cwd,
            env=server_env(port, runner, env or {}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stopped as one, not hit by a terminal's ^C
        )
    server = CogServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        health = server.wait_settled(ready_timeout)
        if require_ready and health["status"] != "READY":
            setup_logs = health.get("setup", {}).get("logs", "")
            raise CogServerError(f"cog server {health['status']}: {setup_logs.strip()[-500:]}")
        yield server
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and its worker: the whole process group, waited for until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    deadline = time.monotonic() + 15
    while _group_alive(process.pid):  # the worker outlives the server by a moment
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
        time.sleep(0.02)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def main() -> None:
    """`make serve`: Cog's server in the foreground, in place of this process."""
    parser = argparse.ArgumentParser(prog="python -m ship.cog_server", description=main.__doc__)
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    command = [sys.executable, "-m", "cog.server.http", "--host", args.host]
    os.chdir(REPO)
    os.execve(sys.executable, command, server_env(args.port, "predict.py:Runner", {}))


if __name__ == "__main__":
    main()
