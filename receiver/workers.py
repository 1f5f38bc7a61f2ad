"""Background work in a receiver process: a thread that repeats a step until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("receiver")


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
