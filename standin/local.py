"""The whole loop on one machine: the Cog server, the stand-in for Replicate, the receiver.

`make demo` and the tests start these the same way, so what the tests check is what the demo
runs. Each is a context manager that stops what it started, also on Ctrl-C or an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

from localcog import REPO
from localcog.loopback import free_port, serve_in_thread
from localcog.polling import PollTimeoutError, poll
from localcog.processes import dying_with_parent
from localcog.schema import SCHEMA_PATH
from localcog.server import cog_server
from standin.app import create_standin
from standin.memory import StandIn
from standin.webhooks import RETRY_DELAYS

MODEL = "local/all-minilm-l6-v2"
SCHEMA = REPO / SCHEMA_PATH


def clean_env() -> dict[str, str]:
    """This shell's environment without settings meant for Replicate or a real receiver."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "RECEIVER_"))}


@contextmanager
def local_replicate(
    logs: Path, token: str, secret: str, retry_delays: tuple[float, ...] = RETRY_DELAYS
) -> Iterator[StandIn]:
    """The stand-in, with MODEL's version registered, running predictions on a Cog server."""
    standin = StandIn(token=token, secret=secret, retry_delays=retry_delays)
    port = free_port()
    standin.base_url = f"http://127.0.0.1:{port}"
    with serve_in_thread(create_standin(standin), port):
        # Cog uploads file outputs to the stand-in, which serves them as replicate.delivery does.
        upload = ["--upload-url", f"{standin.base_url}/_uploads/"]
        with cog_server(logs / "cog-server.log", args=upload) as cog:
            standin.cog_url = cog.url
            standin.add_version(MODEL, json.loads(SCHEMA.read_text()))
            yield standin


class ReceiverProcess:
    """`python -m receiver serve` in its own process, as a user runs it, with exactly `env`."""

    def __init__(
        self,
        env: dict[str, str],
        log: IO[bytes],
        port: int | None = None,
        under: Sequence[str] = (),
    ) -> None:
        """`under`: a command to run it under (the tests give it a disk of its own this way)."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        serve = [sys.executable, "-m", "receiver", "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(
            dying_with_parent([*under, *serve]),
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float = 60) -> None:
        """Wait for /healthz to answer 200; a receiver that exits first never will."""
        try:
            poll(self._healthy, timeout, 0.05, "receiver healthy")
        except PollTimeoutError:
            raise RuntimeError("receiver not healthy in time") from None

    def _healthy(self) -> bool | None:
        """True once /healthz answers 200; None while not yet (for `poll`)."""
        if self.process.poll() is not None:
            raise RuntimeError(f"receiver exited with {self.process.returncode}")
        try:
            if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@contextmanager
def receiver_process(
    env: dict[str, str], log_path: Path, port: int | None = None, under: Sequence[str] = ()
) -> Iterator[ReceiverProcess]:
    """A healthy receiver process, stopped on exit."""
    with log_path.open("ab") as log:
        receiver = ReceiverProcess(env, log, port, under)
        try:
            receiver.wait_healthy()
            yield receiver
        finally:
            receiver.stop()
