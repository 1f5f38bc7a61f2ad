"""Concurrent predictions share forward passes.

Cog runs up to COG_MAX_CONCURRENCY predictions of an async `run()` at once on one event loop.
Alone, each would pay a forward pass of its own: a search box's one-text queries would run as
batches of one, at several times the cost per text of a full batch. Here each prediction hands
its texts to one `Coalescer`, whose scheduler task fills every step of the engine from all the
predictions waiting, within a token budget, and hands each prediction exactly its own vectors
back, in its order.

- Fair both ways: a step first takes one text from every waiting prediction (the oldest
  first, then the shortest next texts), then gives the room left to the oldest. A one-text
  query joins the next step however many long requests are ahead of it; the oldest request
  moves in every step however many queries keep coming, and big requests end in the order
  they came instead of all together at the end.
- The step runs in a worker thread (torch releases the GIL), so predictions keep arriving,
  and the next step fills up, while one runs.
- A cancelled prediction's texts leave the queue at once; if some are in the running step,
  their vectors are dropped when it ends. Nobody else's are touched.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from embedder.engine import DIMENSIONS, Embedder

log = logging.getLogger(__name__)

# Tokenising up to this many characters on the event loop takes well under a millisecond,
# less than a hop to a thread; more (up to 2 MiB, before truncation) goes to a thread so the
# loop keeps taking predictions and cancels meanwhile.
INLINE_TOKENIZE_CHARS = 4096


@dataclass(eq=False)
class Request:
    """One prediction's texts on their way through the shared steps."""

    token_ids: list[list[int]]
    normalize: bool
    vectors: np.ndarray  # [n, 384], filled row by row as steps end
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

    def fail(self, error: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(error)


@dataclass(frozen=True)
class Row:
    """One text of one request, taken into a step."""

    request: Request
    index: int  # the text's place in its request


class Coalescer:
    """Fills each step of the engine from every waiting prediction; one event loop, one engine.

    `token_budget`, `max_texts`: what one step may hold (the engine splits it into padded
    passes of its own plan). `max_wait`: how long the scheduler, woken from idle by a first
    request, waits for company before a step that is not full; while a step runs, the next
    one fills by itself.
    """

    def __init__(
        self, embedder: Embedder, token_budget: int, max_texts: int, max_wait: float
    ) -> None:
        self.embedder = embedder
        self.token_budget = token_budget
        self.max_texts = max_texts
        self.max_wait = max_wait
        self._waiting: list[Request] = []  # oldest first; each has texts not yet in a step
        self._running: list[Row] = []  # the step in the worker thread now
        self._forward = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="forward")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None
        self.steps = 0  # steps run, and the texts they held: sharing shows in these
        self.texts = 0

    def warm_up(self) -> None:
        """Two short passes through the worker thread, which the first requests should not pay
        for: the first builds oneDNN/cuBLAS plans and thread pools of the thread's own, and
        TorchScript profiles a traced encoder on its first call and plans it on its second.
        (A full pass would also start the core a small one leaves to the server: ~20 ms the
        first big request pays once, against ~0.1 s of every boot.)"""
        for _ in range(2):
            self._forward.submit(self.embedder.embed, ["warm up"]).result()

    async def embed(self, texts: Sequence[str], normalize: bool) -> np.ndarray:
        """Float32 [len(texts), 384] in input order, from steps shared with other callers."""
        self._check_loop()
        if not texts:
            return np.empty((0, DIMENSIONS), dtype=np.float32)
        request = Request.of(await self._tokenize(texts), normalize)
        self.put(request)
        self._start_scheduler()
        try:
            return await request.done
        finally:  # cancelled (or done): whatever is still queued goes
            self._forget(request)

    def put(self, request: Request) -> None:
        """Queue a request for the next steps (the scheduler takes it from there)."""
        self._waiting.append(request)
        self._arrived.set()

    def queued_texts(self) -> int:
        """Texts waiting for a step."""
        return sum(len(request.queued) for request in self._waiting)

    def running_texts(self) -> int:
        """Texts in the step running now."""
        return len(self._running)

    def _check_loop(self) -> None:
        """The scheduler task, the event and the futures belong to the first caller's loop."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a Coalescer serves the event loop it was first used on")

    def _forget(self, request: Request) -> None:
        with contextlib.suppress(ValueError):
            self._waiting.remove(request)

    async def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        if sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARS:
            return self.embedder.tokenize(texts)
        return await asyncio.to_thread(self.embedder.tokenize, texts)

    def _start_scheduler(self) -> None:
        if self._scheduler is None or self._scheduler.done():
            self._scheduler = asyncio.get_running_loop().create_task(self._schedule())

    async def _schedule(self) -> None:
        """Steps, back to back while anything waits; a brief wait for company when woken
        from idle. If the scheduler itself fails, every caller hears why, none waits forever."""
        try:
            while True:
                if not self._waiting:
                    self._arrived.clear()
                    await self._arrived.wait()
                    await self._fill_up()
                step = self.take()
                if step:
                    await self._run(step)
        except BaseException as exc:  # cancelled or its loop closing too: callers hear of it
            if isinstance(exc, Exception):
                log.exception("the coalescer's scheduler failed")
            stopped = RuntimeError(f"the embedding scheduler stopped: {exc!r}")
            for request in [*self._waiting, *(row.request for row in self._running)]:
                request.fail(stopped)
            self._waiting = []
            raise

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
            for index in request.queued:
                texts += 1
                tokens += len(request.token_ids[index])
                if texts >= self.max_texts or tokens >= self.token_budget:
                    return False
        return True

    def take(self) -> list[Row]:
        """The next step, within the budget: first one text from every waiting request, the
        oldest request first (it always moves), then the others shortest next text first
        (oldest first among equals), then the room left to the oldest requests, as many texts
        as fit."""
        if not self._waiting:  # the one that woke the scheduler was cancelled meanwhile
            return []
        step: list[Row] = []
        tokens = 0
        oldest, *others = self._waiting
        first_round = [oldest, *sorted(others, key=lambda request: request.next_length())]
        for request in first_round:  # everyone moves: a query never waits behind a corpus
            if len(step) == self.max_texts:
                break
            if not step or tokens + request.next_length() <= self.token_budget:
                tokens += request.next_length()
                step.append(Row(request, request.queued.popleft()))
        for request in self._waiting:  # the rest first come, first served: the oldest ends first
            while request.queued and len(step) < self.max_texts:
                if tokens + request.next_length() > self.token_budget:
                    break
                tokens += request.next_length()
                step.append(Row(request, request.queued.popleft()))
        self._waiting = [request for request in self._waiting if request.queued]
        return step

    async def _run(self, step: list[Row]) -> None:
        token_ids = [row.request.token_ids[row.index] for row in step]
        normalize = [row.request.normalize for row in step]
        loop = asyncio.get_running_loop()
        self._running = step
        self.steps += 1
        self.texts += len(step)
        try:
            vectors = await loop.run_in_executor(
                self._forward, self.embedder.vectors, token_ids, normalize
            )
        except Exception as exc:  # the step failed: so do the predictions in it, and only they
            for request in {row.request for row in step}:
                request.fail(exc)
                self._forget(request)
            return
        finally:
            self._running = []
        for position, row in enumerate(step):
            self._deliver(row, vectors[position])

    @staticmethod
    def _deliver(row: Row, vector: np.ndarray) -> None:
        request = row.request
        if request.done.done():  # cancelled while its step ran, or failed in another
            return
        request.vectors[row.index] = vector
        request.unfinished -= 1
        if request.unfinished == 0:
            request.done.set_result(request.vectors)
