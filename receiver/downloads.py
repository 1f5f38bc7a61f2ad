"""The download worker: fetch every output file of a terminal prediction before Replicate
deletes it (one hour), many at once, without holding up webhooks.

Jobs live in the `files` table, so the queue survives restarts and is shared by every receiver
process. A worker has `RECEIVER_DOWNLOAD_CONCURRENCY` slots, each a thread fetching one file
(`receiver.fetching`). Each turn is one short transaction (`FileQueue.cycle`): settle what
finished, renew the leases of what still runs, claim jobs for the free slots. So a slow or huge
file holds one slot, not the queue; a worker that dies leaves leases that run out within
LEASE_SECONDS, and its `.partial-*` files are removed by whichever worker finds them stale.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from receiver.fetching import (
    PARTIAL_PREFIX,
    DownloadError,
    Limits,
    TooLargeError,
    fetch,
    http_client,
)
from receiver.rules import AllowList
from receiver.settings import Settings
from receiver.store import Job, Settlement, Store, StoredFile, Turn

LEASE_SECONDS = 30.0  # a claimed job is this worker's for this long, renewed while it runs
RENEW_EVERY = LEASE_SECONDS / 3
# While webhooks are busy (`receiver.yielding`): four downloads at once and ten turns a second
# at most, so at most 40 files a second; a turn's transaction costs more CPU than a small file.
YIELD_SLOTS = 4
YIELD_TURN_SECONDS = 0.1
SETTLE_WINDOW = 0.05  # seconds a turn waits for running downloads: finished ones settle together
# A live download writes its partial file at least once per read timeout (60 s, after a 10 s
# connect); one untouched for five minutes belongs to a worker that died.
STALE_PARTIAL_SECONDS = 300.0


def backoff(attempts: int, base: float = 2.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter: retries from many receivers do not align."""
    return random.uniform(0.5, 1.5) * min(cap, base * 2.0 ** (attempts - 1))


class Downloader:
    """A download worker's turns; `step` is one. `clock` is the queue's time (tests move it)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        yielding: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.yielding = yielding  # True while webhooks are busy (`receiver.yielding`)
        self.slots = settings.receiver_download_concurrency
        self.limits = Limits(
            allow_list=AllowList(settings.receiver_download_hosts),
            max_bytes=settings.receiver_download_max_bytes,
            timeout=settings.receiver_download_timeout_seconds,
        )
        self.client = http_client(self.slots, self.limits.timeout)
        self.pool = ThreadPoolExecutor(self.slots, thread_name_prefix="download")
        self.running: dict[Future[StoredFile], Job] = {}
        self.finished: list[Settlement] = []
        self.housekept_at = -RENEW_EVERY  # the first turn keeps house: resume at once

    def step(self) -> bool:
        """Settle, renew and claim in one transaction, then give the running downloads up to
        SETTLE_WINDOW to finish. False when nothing is running and nothing was due."""
        now = self.clock()
        started = time.monotonic()
        housekeeping = self._housekeeping_due(now)
        yielding = self.yielding()
        slots = YIELD_SLOTS if yielding else self.slots
        turn = Turn(
            now=now,
            lease=LEASE_SECONDS,
            max_attempts=self.settings.receiver_download_max_attempts,
            want=max(0, slots - len(self.running)),
            settled=self.finished,
            renew=list(self.running.values()) if housekeeping else [],
            reclaim=housekeeping,
        )
        claimed = self.store.download_turn(turn)
        self.finished = []
        root = self.settings.receiver_output_dir
        for job in claimed:
            self.running[self.pool.submit(fetch, job, root, self.limits, self.client)] = job
        if not self.running:
            return False
        window = YIELD_TURN_SECONDS if yielding else SETTLE_WINDOW
        done, _ = wait(self.running, timeout=window)
        for future in done:
            self.finished.append(self._settlement(self.running.pop(future), future))
        if yielding:
            time.sleep(max(0.0, YIELD_TURN_SECONDS - (time.monotonic() - started)))
        return True

    def close(self) -> None:
        """Record what finished; give back what still runs, queued again without charging an
        attempt (a download may take minutes, a stop should not), and let the pool go."""
        now = self.clock()
        for future, job in self.running.items():
            if future.done():
                self.finished.append(self._settlement(job, future))
            else:
                abandoned = Settlement(job.id, job.attempts, "queued", now, counted=False)
                self.finished.append(abandoned)
        self.running = {}
        turn = Turn(
            now=now,
            lease=LEASE_SECONDS,
            max_attempts=self.settings.receiver_download_max_attempts,
            want=0,
            settled=self.finished,
        )
        self.store.download_turn(turn)
        self.finished = []
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _housekeeping_due(self, now: float) -> bool:
        """Every RENEW_EVERY: renew the running jobs' leases, take over jobs whose lease ran
        out, and sweep dead workers' partial files. True when this turn does it."""
        if now - self.housekept_at < RENEW_EVERY:
            return False
        self.housekept_at = now
        remove_stale_partials(self.settings.receiver_output_dir)
        return True

    def _settlement(self, job: Job, future: Future[StoredFile]) -> Settlement:
        """How this attempt ended. Any failure is an attempt; at the attempt limit, or when a
        retry cannot help (a file over the size cap), the job is dead-lettered."""
        now = self.clock()
        exc = future.exception()
        if exc is None:
            return Settlement(job.id, job.attempts, "done", now, stored=future.result())
        reason = str(exc) if isinstance(exc, DownloadError) else f"{type(exc).__name__}: {exc}"
        reason = reason[:500]
        last = job.attempts >= self.settings.receiver_download_max_attempts
        if last or isinstance(exc, TooLargeError):
            return Settlement(job.id, job.attempts, "dead", now, last_error=reason)
        retry_at = now + backoff(job.attempts)
        return Settlement(job.id, job.attempts, "queued", retry_at, last_error=reason)


def remove_stale_partials(root: Path) -> None:
    """`.partial-*` files nobody has written to for a while: left by a worker that died."""
    if not root.is_dir():
        return
    cutoff = time.time() - STALE_PARTIAL_SECONDS
    for partial in root.glob(f"{PARTIAL_PREFIX}*"):
        try:
            if partial.stat().st_mtime < cutoff:
                partial.unlink()
        except FileNotFoundError:
            pass  # finished or removed by another worker meanwhile
