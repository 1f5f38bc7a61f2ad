"""`make stack`: the offline loop in the foreground, driven from another shell by `make deploy
smoke`, and stopped by Ctrl-C with nothing left running."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from localcog import REPO
from localcog.polling import PollTimeoutError, poll
from tests.support.commands import CLEAN_ENV, marked, run_make, run_module


@dataclass
class RunningStack:
    process: subprocess.Popen[str]
    marker: str
    exports: dict[str, str]
    banner: list[str]


def read_banner(process: subprocess.Popen[str]) -> list[str]:
    """Lines up to 'stack: running', as a user sees them before switching shells."""
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("stack: running"):
            return lines
    raise AssertionError(f"the stack ended before running: {lines} {process.stderr}")


def gone(marker: str, timeout: float = 30) -> bool:
    """Whether every process carrying `marker` has exited (a dying parent's children take a
    moment to follow it)."""

    def exited() -> bool | None:
        return None if marked(marker) else True

    try:
        return poll(exited, timeout, 0.05, f"processes marked {marker} exited")
    except PollTimeoutError:
        return False


def parse_exports(lines: list[str]) -> dict[str, str]:
    """The `export NAME=value` lines, parsed as a shell would."""
    exports = {}
    for line in lines:
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            exports[name] = shlex.split(value)[0]
    return exports


@pytest.fixture
def stack(schema_file: Path, tmp_path: Path) -> Iterator[RunningStack]:
    marker = uuid.uuid4().hex
    process = subprocess.Popen(
        [sys.executable, "-m", "standin.stack", "--data-dir", str(tmp_path)],
        cwd=REPO,
        # TMPDIR: the Cog server's scratch folder, which a stack killed outright cannot remove.
        env={**CLEAN_ENV, "STACK_TEST_MARKER": marker, "TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, like a terminal's foreground job
    )
    try:
        banner = read_banner(process)
        yield RunningStack(process, marker, parse_exports(banner), banner)
    finally:
        if process.poll() is None:
            process.terminate()
        process.communicate(timeout=120)
    assert gone(marker)


def test_stack_prints_what_the_ship_scripts_need(stack: RunningStack) -> None:
    assert set(stack.exports) == {
        "REPLICATE_API_TOKEN",
        "REPLICATE_BASE_URL",
        "RECEIVER_URL",
        "RECEIVER_API_TOKEN",
        "MODEL",
        "DEPLOYMENT",
        "HARDWARE",
    }
    # Every URL it prints answers.
    for line in stack.banner:
        if match := re.match(r"stack: (Cog server|Replicate stand-in|receiver)\s+(\S+)", line):
            assert httpx.get(match[2], timeout=5).status_code < 500, line


def test_make_deploy_smoke_and_a_corpus_job_in_another_shell_then_ctrl_c_stops_everything(
    stack: RunningStack, tmp_path: Path
) -> None:
    result = run_make("deploy", "smoke", env={**CLEAN_ENV, **stack.exports})
    assert result.returncode == 0, result.stderr
    assert "deployment local/embeddings created: release 1" in result.stdout
    assert "smoke: ok, prediction " in result.stdout
    assert (tmp_path / "receiver.db").exists()  # the store it was given, not the user's data/

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line {i} of a small corpus\n" for i in range(30)))
    job_id = jobs(
        stack, "submit", str(corpus), "--deployment", "local/embeddings", "--chunk-size", "8"
    )
    jobs(stack, "watch", job_id, "--interval", "0.2")
    jobs(stack, "results", job_id, "--output", str(tmp_path / "vectors.npy"))
    vectors = np.load(tmp_path / "vectors.npy")
    assert vectors.shape == (30, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)  # normalized, all there
    ids_file = (tmp_path / "vectors.ids.jsonl").read_text()
    ids = [json.loads(line)["id"] for line in ids_file.splitlines()]
    assert ids == [str(n) for n in range(1, 31)]  # plain text: ids are line numbers, in order

    assert marked(stack.marker)  # Cog, the stand-in and the receiver run...
    os.killpg(stack.process.pid, signal.SIGINT)  # ^C in the terminal reaches the whole group
    _, err = stack.process.communicate(timeout=120)
    assert stack.process.returncode == 0
    assert err.strip().splitlines()[-1] == "stack: stopped everything it started"
    assert marked(stack.marker) == []  # ...and are gone


def jobs(stack: RunningStack, *args: str) -> str:
    """`python -m receiver jobs ARGS` with the stack's exports, as a user in another shell."""
    done = run_module("receiver", "jobs", *args, env=stack.exports, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_stack_stops_on_sigterm_too(stack: RunningStack) -> None:
    stack.process.terminate()
    _, err = stack.process.communicate(timeout=120)
    assert stack.process.returncode == 0
    assert "Traceback" not in err
    assert marked(stack.marker) == []


def test_a_stack_killed_outright_takes_its_servers_with_it(stack: RunningStack) -> None:
    # SIGKILL to the stack alone leaves it no chance to clean up: the Cog server (in a process
    # group of its own) and the receiver must not run on without it.
    os.kill(stack.process.pid, signal.SIGKILL)
    stack.process.wait(timeout=30)
    assert gone(stack.marker)
