"""Background work in a receiver process: a thread that repeats a step until stopped
(`Periodic`), or a child process kept running (`ChildWorker`)."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from receiver.yielding import TICK_SECONDS

log = logging.getLogger("receiver")
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # where `receiver` is importable from


class Worker(Protocol):
    """What the app starts with itself and stops after its last request."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Periodic:
    """Call `step` while it finds work; when it finds none, wait `interval` (or the stop)."""

    def __init__(self, name: str, step: Callable[[], bool], interval: float) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.step()
            except Exception:  # a failing step must not kill the worker; the job stays queued
                log.exception("%s step failed", self.name)
                busy = False
            if not busy:
                self._stop.wait(self.interval)


class ChildWorker:
    """A worker in a child process, `python -m module`, kept running: `config` is its first
    line on stdin, and stdin stays open while we want it (it stops when the pipe closes, so it
    also stops when this process dies, SIGKILL included). Restarted if it exits on its own."""

    def __init__(
        self, name: str, module: str, config: bytes, pulse: Callable[[], bytes] | None = None
    ) -> None:
        self.name = name
        self.module = module
        self.config = config
        self.pulse = pulse  # a line for the child every TICK_SECONDS while it runs, if given
        self._stop = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # a stop never misses a child being started
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Close its stdin, so it finishes what it is doing; kill it after 30 s."""
        with self._lock:
            self._stop.set()
            process = self._process
        if process is not None and process.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                process.stdin.close()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self._thread.join(timeout=35)

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stop.is_set():
                    return
                process = subprocess.Popen(
                    [sys.executable, "-m", self.module], stdin=subprocess.PIPE, env=child_env()
                )
                self._process = process
            self._send(process, self.config)
            code = self._tend(process)
            if not self._stop.is_set():
                log.warning("%s process exited (%s); starting another in 1 s", self.name, code)
                self._stop.wait(1)

    def _tend(self, process: subprocess.Popen[bytes]) -> int:
        """Wait for the child to exit, sending it a pulse every TICK_SECONDS meanwhile. One
        wake-up a tick: `Popen.wait(timeout)` would poll, eight times a tick, in the process
        whose event loop answers the webhooks."""
        if self.pulse is None:
            return process.wait()
        while not self._stop.wait(TICK_SECONDS):
            code = process.poll()
            if code is not None:
                return code
            self._send(process, self.pulse())
        return process.wait()  # stop() closed its stdin: it is finishing

    @staticmethod
    def _send(process: subprocess.Popen[bytes], line: bytes) -> None:
        assert process.stdin is not None
        with contextlib.suppress(OSError, ValueError):  # it died, or stop() closed it
            process.stdin.write(line)
            process.stdin.flush()


def child_env() -> dict[str, str]:
    """This environment, with this package importable wherever the child starts."""
    pythonpath = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.getenv("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": pythonpath}
