"""Our commands run as a user runs them: `python -m <module>` in the repository, with an
environment free of the caller's Replicate and receiver settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from localcog import REPO
from standin.local import clean_env

CLEAN_ENV = clean_env()


def run_module(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={**CLEAN_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_receiver(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m receiver ARGS` with `env` on top of the clean environment."""
    return run_module("receiver", *args, env=env, timeout=60)


def run_make(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`make ARGS` in the repository; `env` is the whole environment (default: CLEAN_ENV)."""
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO,
        env=CLEAN_ENV if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def marked(marker: str) -> list[int]:
    """Processes whose environment carries `marker`: whatever a command started and left behind."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:  # gone, or not ours to read
            continue
    return found


def repository_files() -> list[str]:
    """Every file a commit would hold now: tracked, or new and not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


def children_of(pid: int) -> dict[int, str]:
    """Live child processes of `pid`: their command lines."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ")
                found[int(stat.parent.name)] = cmdline.decode()
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended while we looked
    return found
