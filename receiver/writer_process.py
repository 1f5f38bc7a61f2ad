"""The writer process: records deliveries in group commits, on its own core.

`python -m receiver.writer_process` is started by `receiver.writer.Writer`, one per receiver
process. It reads frames on stdin (first the store's configuration, then deliveries) and
answers on stdout, one frame per transaction: the wire format is in `receiver.frames`.

Why a process and not a thread: a batch's work is Python as well as the database's (parsing,
merging, binding), and in a thread it holds the GIL the event loop needs, so the two stall each
other. Measured with `make bench-receiver` (with SQLAlchemy Core statements then): about 1.5
times the throughput of the same writer in a thread.

Group commit: everything that has arrived while the last transaction ran is the next batch, so
one fsync covers many deliveries. A batch that fails is retried one delivery at a time, so one
bad delivery cannot fail its neighbours. The process ends when its stdin closes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from receiver.frames import Answer, Frames, answers_frame, parse_request
from receiver.store import MAX_BATCH, Delivery, Store, StoreConfig

log = logging.getLogger("receiver")


class Recorder:
    """One database connection, kept open between batches and reopened after an error."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._conn: Connection | None = None

    def record_deliveries(self, batch: list[tuple[int, Delivery]]) -> list[Answer]:
        """Commit `batch` in one transaction, or each alone when one of them is at fault."""
        try:
            outcomes = self.store.record_batch([d for _, d in batch], self._connection())
            return [(seq, outcome, None) for (seq, _), outcome in zip(batch, outcomes, strict=True)]
        except Exception as exc:  # a store error, or a bug: either must not take others down
            if not isinstance(exc, SQLAlchemyError):
                log.exception("recording failed")
            self.close()  # its state is unknown: the next batch starts afresh
            reason = _reason(exc)
            if len(batch) == 1 or isinstance(exc, OperationalError):
                # One delivery, or the store itself failed (a lock timeout, a full disk, a lost
                # connection): one at a time would fail the same way, each after its own wait.
                return [(seq, None, reason) for seq, _ in batch]
            log.warning("batch of %d failed (%s); writing one at a time", len(batch), reason)
            return [answer for one in batch for answer in self.record_deliveries([one])]

    def probe(self, seq: int) -> Answer:
        """Commit the heartbeat: can a commit still reach the disk?"""
        try:
            self.store.heartbeat(self._connection(), time.time())
        except Exception as exc:
            self.close()
            return (seq, None, _reason(exc))
        return (seq, "alive", None)

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self.store.engine.connect()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(SQLAlchemyError):  # the database may be gone
                self._conn.close()
            self._conn = None


def _reason(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


def serve(stdin: int, stdout: int) -> None:
    frames = Frames(stdin)
    first = frames.next_batch()
    if first is None:
        return
    recorder = Recorder(Store.open(StoreConfig.from_json(first[0])))
    pending: list[bytes] | None = first[1:]
    while pending is not None:
        for start in range(0, len(pending), MAX_BATCH):
            batch = [parse_request(p) for p in pending[start : start + MAX_BATCH]]
            deliveries = [(seq, d) for seq, d in batch if d is not None]
            if deliveries:
                _write_all(stdout, answers_frame(recorder.record_deliveries(deliveries)))
            probes = [seq for seq, d in batch if d is None]
            if probes:
                _write_all(stdout, answers_frame([recorder.probe(seq) for seq in probes]))
        pending = frames.next_batch()
    recorder.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    # Stopped by its receiver closing stdin, after the last answer: a ^C or SIGTERM sent to
    # the whole process group must not cut a batch short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    stdout = sys.stdout.fileno()
    os.set_blocking(stdout, True)
    with contextlib.suppress(BrokenPipeError):  # the receiver is gone: nobody awaits answers
        serve(sys.stdin.fileno(), stdout)


if __name__ == "__main__":
    main()
