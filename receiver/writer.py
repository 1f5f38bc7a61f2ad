"""The event loop's side of the writer process: send deliveries, await their commits.

Each delivery goes to `receiver.writer_process` (see there for why a process) with a sequence
number; a handler awaits the future for that number, which settles once the delivery's
transaction has committed. If the writer process dies, every delivery still waiting gets a
`StoreError` (a 503, so Replicate retries it) and the next delivery starts a new process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
from collections.abc import Callable
from functools import partial

from receiver.frames import LENGTH, Answered, delivery_frame, frame, parse_answers, probe_frame
from receiver.store import Delivery, Outcome, StoreConfig
from receiver.workers import child_env

log = logging.getLogger("receiver")
PIPE_HIGH_WATER = 64 * 1024  # asyncio's own default: above it, drain() would wait
FAILING_FOR = 60.0  # seconds a failed delivery keeps /healthz unhealthy without a success


class StoreError(Exception):
    """The writer process could not record a delivery, or is gone: the app answers 503."""


class Writer:
    """`config` goes to each writer process as its first frame: it opens the same store."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self._process: asyncio.subprocess.Process | None = None
        self._pending: dict[int, asyncio.Future[Answered]] = {}
        self._seq = itertools.count()
        self._spawning = asyncio.Lock()
        self._readers: set[asyncio.Task[None]] = set()
        self._stopping = False
        # Why the writer's latest answer to a delivery was a failure, and when; None once one
        # succeeds again. A heartbeat can still commit on a disk too full for a delivery, so
        # /healthz asks both; a failure older than FAILING_FOR is forgotten (no delivery may
        # come to clear it while /healthz keeps traffic away).
        self.failing: str | None = None
        self.failing_since = 0.0
        self._probes: set[int] = set()  # sequence numbers of heartbeat probes in flight
        self._answered_at = 0.0  # loop time of the writer process's latest answer

    async def start(self) -> None:
        await self._spawn()

    async def stop(self) -> None:
        """Let the writer process finish what it was sent, then wait for it to exit."""
        self._stopping = True
        process = self._process
        if process is not None and process.stdin is not None:
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
        await asyncio.gather(*self._readers)

    async def write(self, delivery: Delivery, timeout: float) -> Outcome:
        """Record one delivery durably; returns once its transaction has committed, or raises
        StoreError after `timeout` seconds (a lock held, a disk stalled: Replicate retries,
        and a retry of a delivery that did commit in the end is answered `duplicate`)."""
        frame = partial(delivery_frame, delivery=delivery)
        answered = await self._send(frame, probe=False, timeout=timeout)
        if answered == "alive":  # cannot happen: only a probe is answered so
            raise StoreError("the writer answered a delivery as a probe")
        return answered

    async def probe(self, timeout: float) -> None:
        """Return once the writer process has committed a heartbeat and its latest delivery
        did not fail; StoreError if not (the database is locked, the disk full, the process
        gone) or not within `timeout` seconds."""
        await self._send(probe_frame, probe=True, timeout=timeout)
        now = asyncio.get_running_loop().time()
        if self.failing is not None and now - self.failing_since < FAILING_FOR:
            raise StoreError(f"the latest delivery failed: {self.failing}")

    async def _send(
        self, make_frame: Callable[[int], bytes], probe: bool, timeout: float
    ) -> Answered:
        """Send one request to the writer process and await its answer, for `timeout` s at
        most (a timer, not a task per request: this is the hot path)."""
        process = self._process or await self._spawn()
        assert process.stdin is not None
        seq = next(self._seq)
        if probe:
            self._probes.add(seq)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answered] = loop.create_future()
        self._pending[seq] = future
        expiry = loop.call_later(timeout, self._expire, process, future, timeout)
        try:
            process.stdin.write(make_frame(seq))
            if process.stdin.transport.get_write_buffer_size() > PIPE_HIGH_WATER:
                # The writer falls behind: wait for room, but no longer than the deadline.
                with contextlib.suppress(ConnectionError):  # it died: the reader fails it
                    await asyncio.wait_for(process.stdin.drain(), timeout)
            return await future
        except TimeoutError as exc:
            raise StoreError(f"no commit within {timeout:g} s") from exc
        finally:
            expiry.cancel()

    def _expire(
        self, process: asyncio.subprocess.Process, future: asyncio.Future[Answered], timeout: float
    ) -> None:
        """A request's deadline passed: fail it (a 503). A writer process that has not
        answered anything for three deadlines is hung, not slow: kill it, so that the next
        delivery starts another instead of timing out forever."""
        if not future.done():
            future.set_exception(StoreError(f"no commit within {timeout:g} s"))
        silent = asyncio.get_running_loop().time() - self._answered_at
        if silent > 3 * timeout and process.returncode is None:
            log.warning("writer process silent for %.0f s; killing it", silent)
            process.kill()

    async def _spawn(self) -> asyncio.subprocess.Process:
        async with self._spawning:
            if self._process is not None:
                return self._process
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "receiver.writer_process",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=child_env(),
            )
            assert process.stdin is not None
            process.stdin.write(frame(self.config.to_json()))
            self._answered_at = asyncio.get_running_loop().time()  # silent from now on
            reader = asyncio.create_task(self._read_answers(process))
            self._readers.add(reader)
            reader.add_done_callback(self._readers.discard)
            self._process = process
            return process

    def _note(self, error: str | None) -> None:
        if error is None:
            self.failing = None
        elif self.failing is None:
            self.failing = error
            self.failing_since = asyncio.get_running_loop().time()

    async def _read_answers(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        try:
            while True:
                (length,) = LENGTH.unpack(await process.stdout.readexactly(LENGTH.size))
                answers = parse_answers(await process.stdout.readexactly(length))
                self._answered_at = asyncio.get_running_loop().time()
                for seq, outcome, error in answers:
                    if seq in self._probes:
                        self._probes.discard(seq)
                    else:
                        self._note(error)
                    future = self._pending.pop(seq)
                    if future.done():  # expired, or the sender hung up; it may be stored
                        continue
                    if error is None and outcome is not None:
                        future.set_result(outcome)
                    else:
                        future.set_exception(StoreError(error or "no outcome"))
        except asyncio.IncompleteReadError:
            pass  # the process has exited
        # No await before this point: nothing can be sent to the dead process in between.
        self._process = None
        waiting = self._pending
        self._pending = {}
        self._probes.clear()
        for future in waiting.values():
            if not future.done():
                future.set_exception(StoreError("writer process exited"))
        code = await process.wait()
        if not self._stopping:
            log.warning("writer process exited (%s); the next delivery starts another", code)
