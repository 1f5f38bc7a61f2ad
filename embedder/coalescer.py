"""Concurrent predictions share forward passes.

Cog runs up to COG_MAX_CONCURRENCY predictions of an async `run()` at once on one event loop.
Alone, each would pay a forward pass of its own: a search box's one-text queries would run as
batches of one while the engine does thirty times the work per pass in batches of 32. Here each
prediction hands its texts to one `Coalescer`, whose scheduler task fills every forward pass
from all the predictions waiting, within the engine's token budget, and hands each prediction
exactly its own vectors back, in its order.

- Fair both ways: a step takes one text from every waiting prediction first, then gives the
  room left to the oldest. A one-text query joins the next pass however big the requests ahead
  of it; a 1024-text request gets at least one text per pass however many queries keep coming,
  and the oldest big request the leftover room, so big requests end in the order they came
  instead of all together at the end.
- The forward pass runs in a worker thread (torch releases the GIL), so predictions keep
  arriving, and the next step fills up, while a pass runs.
- A cancelled prediction's texts leave the queue at once; if some are in the running pass,
  their vectors are dropped when it ends. Nobody else's are touched.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from embedder.engine import DIMENSIONS, Embedder

# Tokenising this many texts inline is quicker than a hop to a thread (tens of microseconds);
# a bigger request is tokenised in a thread so the event loop keeps answering meanwhile.
INLINE_TOKENIZE = 16


@dataclass(eq=False)
class Request:
    """One prediction's texts on their way through the shared passes."""

    token_ids: list[list[int]]
    normalize: bool
    vectors: np.ndarray  # [n, 384], filled row by row as passes end
    done: asyncio.Future[np.ndarray]
    queued: collections.deque[int] = field(default_factory=collections.deque)  # longest first
    unfinished: int = 0  # rows not yet filled

    @classmethod
    def of(cls, token_ids: list[list[int]], normalize: bool) -> Request:
        request = cls(
            token_ids=token_ids,
            normalize=normalize,
            vectors=np.empty((len(token_ids), DIMENSIONS), dtype=np.float32),
            done=asyncio.get_running_loop().create_future(),
        )
        longest_first = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))
        request.queued.extend(longest_first)
        request.unfinished = len(token_ids)
        return request

    def next_length(self) -> int:
        return len(self.token_ids[self.queued[0]])


@dataclass(frozen=True)
class Slice:
    """One text of one request, taken into a step."""

    request: Request
    row: int


class Coalescer:
    """Fills each forward pass from every waiting prediction; one per event loop and engine.

    `max_wait`: how long an idle engine waits for more texts before a pass that is not full.
    While a pass runs, the next one fills by itself; the wait only matters when the engine
    has nothing to do, where it trades that much latency for a fuller first pass.
    """

    def __init__(self, embedder: Embedder, max_wait: float) -> None:
        self.embedder = embedder
        self.max_wait = max_wait
        self.token_budget = embedder.plan.step_batches * embedder.plan.token_budget
        self.max_texts = embedder.plan.step_batches * embedder.plan.max_texts
        self._waiting: list[Request] = []  # oldest first; each has texts not yet in a step
        self._arrived = asyncio.Event()
        self._running: list[Slice] = []  # the pass in the worker thread now
        self._forward = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="forward")
        self._scheduler: asyncio.Task[None] | None = None
        self.passes = 0  # forward steps run, and the texts they held: sharing shows in these
        self.texts = 0

    async def embed(self, texts: Sequence[str], normalize: bool) -> np.ndarray:
        """Float32 [len(texts), 384] in input order, from passes shared with other callers."""
        if not texts:
            return np.empty((0, DIMENSIONS), dtype=np.float32)
        token_ids = await self._tokenize(texts)
        request = Request.of(token_ids, normalize)
        self.put(request)
        self._start_scheduler()
        try:
            return await request.done
        finally:  # cancelled (or done): whatever is still queued goes
            with contextlib.suppress(ValueError):
                self._waiting.remove(request)

    def put(self, request: Request) -> None:
        """Queue a request for the next steps (the scheduler takes it from there)."""
        self._waiting.append(request)
        self._arrived.set()

    def queued_texts(self) -> int:
        """Texts waiting for a step."""
        return sum(len(request.queued) for request in self._waiting)

    def running_texts(self) -> int:
        """Texts in the pass running now."""
        return len(self._running)

    async def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        if len(texts) <= INLINE_TOKENIZE:
            return self.embedder.tokenize(texts)
        return await asyncio.to_thread(self.embedder.tokenize, texts)

    def _start_scheduler(self) -> None:
        if self._scheduler is None or self._scheduler.done():
            self._scheduler = asyncio.get_running_loop().create_task(self._schedule())

    async def _schedule(self) -> None:
        while True:
            await self._arrived.wait()
            await self._fill_up()
            step = self.take()
            if not self._waiting:
                self._arrived.clear()
            if step:
                await self._run(step)

    async def _fill_up(self) -> None:
        """Wait up to max_wait for more texts while the next step has room for them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while self._room_left() and loop.time() < deadline:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
            except TimeoutError:
                return

    def _room_left(self) -> bool:
        """Whether the next step could take more texts than are queued (stops counting early:
        a 1024-text request fills it at once)."""
        texts = 0
        tokens = 0
        for request in self._waiting:
            for row in request.queued:
                texts += 1
                tokens += len(request.token_ids[row])
                if texts >= self.max_texts or tokens >= self.token_budget:
                    return False
        return True

    def take(self) -> list[Slice]:
        """The next step, within the budget: first one text from every waiting request,
        oldest first, then the room left to the oldest requests, as many texts as fit."""
        step: list[Slice] = []
        tokens = 0
        for request in self._waiting:  # everyone moves: a query never waits behind a corpus
            if len(step) == self.max_texts:
                break
            if not step or tokens + request.next_length() <= self.token_budget:
                tokens += request.next_length()
                step.append(Slice(request, request.queued.popleft()))
        for request in self._waiting:  # the rest first come, first served: the oldest ends first
            while request.queued and len(step) < self.max_texts:
                if tokens + request.next_length() > self.token_budget:
                    break
                tokens += request.next_length()
                step.append(Slice(request, request.queued.popleft()))
        self._waiting = [r for r in self._waiting if r.queued]
        return step

    async def _run(self, step: list[Slice]) -> None:
        token_ids = [s.request.token_ids[s.row] for s in step]
        normalize = [s.request.normalize for s in step]
        loop = asyncio.get_running_loop()
        self._running = step
        self.passes += 1
        self.texts += len(step)
        try:
            vectors = await loop.run_in_executor(
                self._forward, self.embedder.vectors, token_ids, normalize
            )
        except Exception as exc:  # the pass failed: so do the predictions in it, and only they
            for request in {s.request for s in step}:
                if not request.done.done():
                    request.done.set_exception(exc)
            return
        finally:
            self._running = []
        for position, piece in enumerate(step):
            self._deliver(piece, vectors[position])

    @staticmethod
    def _deliver(piece: Slice, vector: np.ndarray) -> None:
        request = piece.request
        if request.done.done():  # cancelled while its pass ran, or failed in another
            return
        request.vectors[piece.row] = vector
        request.unfinished -= 1
        if request.unfinished == 0:
            request.done.set_result(request.vectors)
