"""Group commit: one thread writes every delivery, many per transaction.

A durable commit costs an fsync. Committing each webhook on its own thread makes SQLite writers
queue on its lock (and sleep in its busy handler) and makes PostgreSQL pay one fsync per
delivery. Instead, handlers hand their delivery to this thread and wait; it takes everything
queued so far, records it in one transaction, and answers each handler. A batch that fails is
retried one delivery at a time, so one bad delivery cannot fail its neighbours.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future

from sqlalchemy.exc import SQLAlchemyError

from receiver.store import Delivery, Outcome, Store

log = logging.getLogger("receiver")
MAX_BATCH = 256
_STOP = object()


class Writer:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: queue.SimpleQueue[tuple[Delivery, Future[Outcome]] | object] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    def submit(self, delivery: Delivery) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        self._queue.put((delivery, future))
        return future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in batch
            self._write([b for b in batch if b is not _STOP])  # type: ignore[misc]
            if stop:
                return

    def _write(self, batch: list[tuple[Delivery, Future[Outcome]]]) -> None:
        try:
            outcomes = self.store.record_batch([d for d, _ in batch])
        except SQLAlchemyError as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            log.warning("batch of %d failed (%s); writing one at a time", len(batch), exc)
            for one in batch:
                self._write([one])
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            future.set_result(outcome)
