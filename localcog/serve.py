"""`make serve`: Cog's HTTP server in the foreground, until Ctrl-C; a failed start is one line.

The server runs as a child in its own process group: its output is held back until setup has
finished, so a busy port, a bad MODEL_DTYPE or missing weights end the start in one line
instead of a server that answers 503 forever.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import IO

from localcog import REPO
from localcog.processes import STOP_SIGNALS, dying_with_parent
from localcog.server import (
    COG_SERVER,
    RUNNER,
    CogServerError,
    check_port,
    prediction_ids,
    remove_prediction_dirs,
    scratch_dir,
    server_env,
    setup_error,
    stop_group,
    wait_settled,
)


class HeldOutput:
    """The server's output, held back until it is READY, then passed through as it comes.

    A start that fails is reported in one line; the log lines leading to it are dropped.
    """

    def __init__(self, stream: IO[bytes], sink: IO[bytes]) -> None:
        self.sink = sink
        self.held: list[bytes] = []
        self.prediction_ids: set[str] = set()  # to remove coglet's folders once it has stopped
        self.passing = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self.prediction_ids.update(prediction_ids(line.decode(errors="replace")))
            with self.lock:
                if self.passing:
                    self.sink.write(line)
                    self.sink.flush()
                else:
                    self.held.append(line)

    def release(self) -> None:
        with self.lock:
            self.sink.writelines(self.held)
            self.sink.flush()
            self.held.clear()
            self.passing = True

    def last_line(self) -> str:
        with self.lock:
            lines = [line for line in self.held if line.strip()]
        return lines[-1].decode(errors="replace").strip() if lines else "no output"


class Stopped(Exception):  # noqa: N818 - a signal, not an error
    """SIGINT, SIGTERM or SIGHUP arrived."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


def url_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to `host`."""
    local = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{local}]" if ":" in local else local


def serve(host: str, port: int, ready_timeout: float) -> int:
    """Start the server as a child, report a failed start in one line, then wait on it."""
    check_port(host, port)
    with scratch_dir() as tmp:
        process = subprocess.Popen(
            dying_with_parent([*COG_SERVER, "--host", host]),
            cwd=REPO,
            env=server_env(port, RUNNER, {"TMPDIR": tmp}, REPO),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stopped as a group by us, whatever signal we get
        )
        return wait_on(process, host, port, ready_timeout)


def wait_on(process: subprocess.Popen[bytes], host: str, port: int, ready_timeout: float) -> int:
    """Report a failed start in one line, else pass the server's output on until it exits."""
    assert process.stdout is not None
    output = HeldOutput(process.stdout, sys.stdout.buffer)
    try:
        try:
            health = wait_settled(f"http://{url_host(host)}:{port}", process, ready_timeout)
        except CogServerError as exc:
            raise CogServerError(f"{exc}: {output.last_line()}") from exc
        if health["status"] != "READY":
            raise CogServerError(f"setup failed: {setup_error(health)}")
        output.release()
        print(f"serve: ready at http://{url_host(host)}:{port} (Ctrl-C stops it)", file=sys.stderr)
        code = process.wait()
        output.thread.join()
        if code != 0:
            raise CogServerError(f"the Cog server exited with {code}")
        return 0
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # a second ^C: finish stopping
        stop_group(process)
        output.thread.join(timeout=5)
        remove_prediction_dirs(output.prediction_ids)


def main(argv: Sequence[str] | None = None) -> int:
    """`make serve`: Cog's server in the foreground, until Ctrl-C; a failed start is one line."""
    parser = argparse.ArgumentParser(prog="python -m localcog.serve", description=main.__doc__)
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ready-timeout", type=float, default=180, help="seconds for setup")
    args = parser.parse_args(argv)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop)
    try:
        return serve(args.host, args.port, args.ready_timeout)
    except CogServerError as exc:
        print(f"serve: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except Stopped as stop:
        return 128 + stop.signum


if __name__ == "__main__":
    sys.exit(main())
