"""Group commit: one thread writes every delivery, many per transaction.

A durable commit costs an fsync. Committing each webhook on its own thread makes SQLite writers
queue on its lock (and sleep in its busy handler) and makes PostgreSQL pay one fsync per
delivery. Instead, handlers hand their delivery to this thread and await; it takes everything
queued so far, records it in one transaction, and wakes the event loop once for the whole
batch. A batch that fails is retried one delivery at a time, so one bad delivery cannot fail
its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Sequence

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from receiver.store import Delivery, Outcome, Store

log = logging.getLogger("receiver")
MAX_BATCH = 256
Pending = tuple[Delivery, "asyncio.Future[Outcome]"]
_STOP = None


class Writer:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Connection | None = None  # kept open between batches; reopened after errors

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    async def write(self, delivery: Delivery) -> Outcome:
        """Record one delivery durably; returns once its transaction has committed."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.put((delivery, future))
        return await future

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            batch: list[Pending | None] = [item]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            pending = [p for p in batch if p is not None]
            results = self._record([d for d, _ in pending])
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_settle, [f for _, f in pending], results)
            if len(pending) < len(batch):
                break
        if self._conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._conn.close()

    def _record(self, batch: list[Delivery]) -> Sequence[Outcome | SQLAlchemyError]:
        try:
            if self._conn is None:
                self._conn = self.store.engine.connect()
            return self.store.record_batch(batch, self._conn)
        except SQLAlchemyError as exc:
            if self._conn is not None:
                with contextlib.suppress(SQLAlchemyError):  # the database may be gone
                    self._conn.close()  # its state is unknown: the next batch starts afresh
                self._conn = None
            if len(batch) == 1:
                return [exc]
            log.warning("batch of %d failed (%s); writing one at a time", len(batch), exc)
            return [result for one in batch for result in self._record([one])]


def _settle(
    futures: list[asyncio.Future[Outcome]], results: Sequence[Outcome | SQLAlchemyError]
) -> None:
    for future, result in zip(futures, results, strict=True):
        if future.cancelled():  # the sender hung up; the delivery may still be stored
            continue
        if isinstance(result, SQLAlchemyError):
            future.set_exception(result)
        else:
            future.set_result(result)
