"""Run the model under Cog's own HTTP server (coglet), without Docker.

This is how `make serve`, `make demo`, the benchmarks and the tests run the predictor: the
same server and input validation as the built image, started from the repository.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from localcog import REPO
from localcog.loopback import free_port
from localcog.polling import PollTimeoutError, poll
from localcog.processes import dying_with_parent
from localcog.schema import runner_of

RUNNER = runner_of(REPO / "cog.yaml")  # what cog.yaml runs: "predict.py:Runner"
SETTLED = {"READY", "SETUP_FAILED", "DEFUNCT"}
COGLET_PREDICTIONS = Path("/tmp/coglet/predictions")  # fixed in coglet 0.23.1 (service.rs)
_PREDICTION_ID = re.compile(r'"prediction_id":"([\w.-]+)"')  # coglet's log lines; never `/`
COG_SERVER = (sys.executable, "-m", "cog.server.http")


class CogServerError(Exception):
    """The server cannot start, exited, or did not settle in time."""


def check_port(host: str, port: int) -> None:
    """Refuse a port another process listens on, in one line: coglet's refusal is a traceback.
    (receiver/__main__.py has its own twin: the receiver ships on its own.)"""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.create_server((host, port), family=family):
            pass  # binds as coglet will (SO_REUSEADDR: a port in TIME_WAIT is free)
    except OverflowError as exc:
        raise CogServerError(f"port {port} is not a TCP port (0-65535)") from exc
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CogServerError(f"port {port} on {host} is in use") from exc
        raise CogServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def concurrency_max(cwd: Path, runner: str) -> int:
    """The `max` of the runner's `@concurrent(max=N)` / `@cog.concurrent(max=N)`, read from its
    source as `cog build` does (a literal integer, else 1) and set in the image as
    COG_MAX_CONCURRENCY: a locally started coglet gets the slots the built image has."""
    file, _, name = runner.partition(":")
    tree = ast.parse((cwd / file).read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            for item in node.body:
                if isinstance(item, ast.AsyncFunctionDef) and item.name in {"run", "predict"}:
                    return _decorator_max(item.decorator_list)
    return 1


def _decorator_max(decorators: list[ast.expr]) -> int:
    """`@concurrent` alone is one slot; `@concurrent(max=N)` is N where N is an integer literal
    >= 1, else `cog build` stops (annotations.go, decoratorCogConcurrentMax): so does this."""
    for decorator in decorators:
        call = decorator if isinstance(decorator, ast.Call) else None
        callee = ast.unparse(call.func if call else decorator)
        if callee not in {"concurrent", "cog.concurrent"}:
            continue
        if call is None or (not call.args and not call.keywords):
            return 1
        only = call.keywords[0] if len(call.keywords) == 1 and not call.args else None
        is_max = only is not None and only.arg == "max"
        literal = only.value.value if only and isinstance(only.value, ast.Constant) else None
        if not is_max or type(literal) is not int or literal < 1:
            raise CogServerError(
                f"@concurrent needs one max= with an integer literal >= 1, as cog build does; "
                f"got {ast.unparse(decorator)}"
            )
        return literal
    return 1


def server_env(port: int, runner: str, extra: Mapping[str, str], cwd: Path) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    image_env = {"COG_MAX_CONCURRENCY": str(concurrency_max(cwd, runner))}
    return {
        **image_env,
        **os.environ,
        # coglet's worker runs the `python` on PATH: it must be ours, with coglet installed.
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "COG_PREDICT_TYPE_STUB": runner,
        "PORT": str(port),
        **extra,
    }


def setup_error(health: Mapping[str, Any]) -> str:
    """The reason setup failed, without coglet's layers of "setup failed" and the class name."""
    logs = str(health.get("setup", {}).get("logs") or "")
    lines = [line for line in logs.splitlines() if line.strip()]
    last = lines[-1] if lines else f"status {health.get('status')}, no setup logs"
    reason = re.split(r"setup failed(?: \(slot [^)]*\))?: ", last, flags=re.IGNORECASE)[-1]
    return re.sub(r"^\w+(?:Error|Exception): ", "", reason).strip()


def wait_settled(url: str, process: subprocess.Popen[Any], timeout: float) -> dict[str, Any]:
    """Poll /health-check until setup has finished one way or the other."""
    try:
        return poll(lambda: settled_health(url, process), timeout, 0.05, "cog server settled")
    except PollTimeoutError:
        raise CogServerError(f"cog server not settled after {timeout:.0f} s") from None


def settled_health(url: str, process: subprocess.Popen[Any]) -> dict[str, Any] | None:
    """/health-check's answer once setup has finished; None while not yet (for `poll`)."""
    if process.poll() is not None:
        raise CogServerError(f"cog server exited with {process.returncode}")
    try:
        health: dict[str, Any] = httpx.get(f"{url}/health-check", timeout=5).json()
    except httpx.TransportError:
        return None  # not listening yet
    return health if health.get("status") in SETTLED else None


@dataclass
class CogServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    slots: int  # predictions it takes at once (COG_MAX_CONCURRENCY)

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/health-check", timeout=5).json()
        return body

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_settled(self, timeout: float) -> dict[str, Any]:
        try:
            return wait_settled(self.url, self.process, timeout)
        except CogServerError as exc:
            lines = self.log().strip().splitlines()
            raise CogServerError(f"{exc}: {lines[-1] if lines else 'no output'}") from exc


@contextmanager
def cog_server(
    log_path: Path,
    *,
    runner: str = RUNNER,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO,
    ready_timeout: float = 180,
    require_ready: bool = True,
    args: Sequence[str] = (),
    port: int | None = None,
) -> Iterator[CogServer]:
    """Start `python -m cog.server.http` on loopback (a free port unless given); stop it on exit."""
    if port is None:
        port = free_port()
    else:
        check_port("127.0.0.1", port)
    with scratch_dir() as tmp, log_path.open("wb") as log:
        environment = server_env(port, runner, {"TMPDIR": tmp, **(env or {})}, cwd)
        process = subprocess.Popen(
            dying_with_parent([*COG_SERVER, "--host", "127.0.0.1", *args]),
            cwd=cwd,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stopped as one, not hit by a terminal's ^C
        )
        slots = int(environment["COG_MAX_CONCURRENCY"])
        server = CogServer(f"http://127.0.0.1:{port}", process, log_path, slots)
        try:
            health = server.wait_settled(ready_timeout)
            if require_ready and health["status"] != "READY":
                raise CogServerError(f"cog server {health['status']}: {setup_error(health)}")
            yield server
        finally:
            stop_group(process)
            remove_prediction_dirs(prediction_ids(server.log()))


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """The server's TMPDIR, removed once it has stopped: the runner's npy outputs go there."""
    return tempfile.TemporaryDirectory(prefix="cog-server-")


def prediction_ids(log: str) -> set[str]:
    """The predictions a server ran, from its log (one JSON object per line)."""
    return set(_PREDICTION_ID.findall(log))


def remove_prediction_dirs(ids: Iterable[str]) -> None:
    """coglet keeps a folder per prediction (`inputs/`, `outputs/`: copies of file outputs,
    large outputs spilled to disk) under a path compiled into it, and never removes it. Once
    our server has stopped, remove the folders of the predictions it ran, and no others."""
    for prediction_id in ids:
        shutil.rmtree(COGLET_PREDICTIONS / prediction_id, ignore_errors=True)
    for parent in (COGLET_PREDICTIONS, COGLET_PREDICTIONS.parent):
        with contextlib.suppress(OSError):
            parent.rmdir()  # only if nothing else is in it


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and its worker: the whole process group, waited for until it is gone."""
    _signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        _signal_group(process.pid, signal.SIGKILL)
        process.wait()
    try:  # the worker outlives the server by a moment
        poll(lambda: _group_gone(process.pid), 15, 0.02, "the Cog server's processes to exit")
    except PollTimeoutError:
        _signal_group(process.pid, signal.SIGKILL)
        try:
            poll(lambda: _group_gone(process.pid), 15, 0.02, "the Cog server's processes to exit")
        except PollTimeoutError:
            raise CogServerError(
                f"the Cog server's processes survived SIGKILL ({process.pid})"
            ) from None


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pgid, signum)


def _group_gone(pgid: int) -> bool | None:
    """True once no process of the group is left; None (ask again) while one is."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return None
