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
