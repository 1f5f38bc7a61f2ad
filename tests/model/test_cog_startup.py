"""Starting and stopping the model server: setup that refuses bad weights or settings in one
line, a busy port, and `make serve` (`python -m localcog.serve`) in the foreground."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from localcog import REPO
from localcog.loopback import free_port
from localcog.server import CogServerError, cog_server
from tests.support.commands import CLEAN_ENV, marked
from tests.support.embeddings import WEIGHTS

pytestmark = pytest.mark.usefixtures("schema_file")


def broken_weights(tmp_path: Path, breakage: str) -> Path:
    folder = tmp_path / "weights"
    shutil.copytree(WEIGHTS, folder)
    if breakage == "missing":
        (folder / "model.safetensors").unlink()
    else:
        data = bytearray((folder / "tokenizer.json").read_bytes())
        data[500] ^= 0x01
        (folder / "tokenizer.json").write_bytes(bytes(data))
    return folder


@pytest.mark.parametrize(
    ("breakage", "message"),
    [("missing", "model.safetensors is missing"), ("corrupt", "tokenizer.json fails its sha256")],
)
def test_setup_refuses_bad_weights_with_one_clear_line(
    tmp_path: Path, breakage: str, message: str
) -> None:
    env = {"WEIGHTS_DIR": str(broken_weights(tmp_path, breakage))}
    with cog_server(tmp_path / "server.log", env=env, require_ready=False) as server:
        health = server.health()
    assert health["status"] == "SETUP_FAILED"
    logs = health["setup"]["logs"]
    assert message in logs
    assert "run `make weights` to fill it" in logs


def test_setup_refuses_an_unknown_model_dtype(tmp_path: Path) -> None:
    env = {"MODEL_DTYPE": "fp8"}
    with cog_server(tmp_path / "server.log", env=env, require_ready=False) as server:
        health = server.health()
    assert health["status"] == "SETUP_FAILED"
    assert (
        "MODEL_DTYPE='fp8' is not one of: auto, float32, bfloat16, float16"
        in health["setup"]["logs"]
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another process listens on."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


def test_cog_server_on_a_busy_port_says_so(busy_port: int, tmp_path: Path) -> None:
    with (
        pytest.raises(CogServerError, match=rf"^port {busy_port} on 127\.0\.0\.1 is in use$"),
        cog_server(tmp_path / "server.log", port=busy_port),
    ):
        pass


@dataclass(frozen=True)
class Served:
    """How `python -m localcog.serve` ended: its exit code, stdout and stderr."""

    returncode: int
    stdout: str
    stderr: str


def run_serve(port: int, env: dict[str, str], tmp_path: Path, interrupt: bool = False) -> Served:
    """`python -m localcog.serve` as `make serve` runs it: its exit code, stdout and stderr.

    With `interrupt`, it gets SIGINT (a terminal's Ctrl-C) once it says it is ready."""
    marker = uuid.uuid4().hex
    stdout = tmp_path / "serve.out"
    with stdout.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "localcog.serve", "--port", str(port)],
            cwd=REPO,
            env={**CLEAN_ENV, **env, "SERVE_TEST_MARKER": marker},
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
    lines: queue.Queue[str] = queue.Queue()  # its stderr, then "" at the end

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)
        lines.put("")

    reader = threading.Thread(target=read)
    reader.start()
    err = []
    try:
        while line := lines.get(timeout=120):
            err.append(line)
            if interrupt and line.startswith("serve: ready at"):
                process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
    finally:
        for pid in [process.pid, *marked(marker)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # only if the test failed: nothing is left otherwise
        reader.join()
    assert marked(marker) == []
    return Served(returncode=process.returncode, stdout=stdout.read_text(), stderr="".join(err))


def test_serve_on_a_busy_port_is_one_line(busy_port: int, tmp_path: Path) -> None:
    served = run_serve(busy_port, env={}, tmp_path=tmp_path)
    assert served.returncode == 1
    assert served.stdout == ""
    assert served.stderr == f"serve: port {busy_port} on 127.0.0.1 is in use\n"


@pytest.mark.parametrize(
    ("env", "words"),
    [
        (
            {"MODEL_DTYPE": "fp16"},
            "MODEL_DTYPE='fp16' is not one of: auto, float32, bfloat16, float16",
        ),
        (
            {"WEIGHTS_DIR": "/nonexistent"},
            "/nonexistent/manifest.json is missing: run `make weights`",
        ),
    ],
)
def test_serve_stops_on_a_failed_setup_in_one_line(
    env: dict[str, str], words: str, tmp_path: Path
) -> None:
    served = run_serve(free_port(), env=env, tmp_path=tmp_path)
    assert served.returncode == 1
    assert served.stdout == ""  # the server's log lines leading to the failure are not shown
    assert served.stderr.count("\n") == 1, served.stderr
    assert served.stderr.startswith("serve: setup failed: ")
    assert words in served.stderr


def test_serve_runs_in_the_foreground_until_ctrl_c(schema_file: Path, tmp_path: Path) -> None:
    served = run_serve(free_port(), env={}, tmp_path=tmp_path, interrupt=True)
    assert served.returncode == 128 + signal.SIGINT
    assert "Server ready" in served.stdout  # the server's own log, passed through once it is up
    assert "serve: ready at http://127.0.0.1:" in served.stderr
    assert "Traceback" not in served.stderr
