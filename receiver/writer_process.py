"""The writer process: records deliveries in group commits, on its own core.

`python -m receiver.writer_process` is started by `receiver.writer.Writer`, one per receiver
process. It reads length-prefixed frames on stdin and answers on stdout:

- first frame: the store's configuration, `{"database_url": …, "download_hosts": […]}`;
- then one frame per delivery, `[seq, webhook_id, now, source]` + newline + the raw JSON body;
- answers: one frame per transaction, `[[seq, outcome, error], …]` (`error` is null or a reason).

Why a process and not a thread: the database work of a batch is mostly Python (SQLAlchemy,
merging), and in a thread it holds the GIL the event loop needs, so the two stall each other.
Measured with `make bench-receiver`: about 1.5 times the throughput of the same writer in a thread.

Group commit: everything that has arrived while the last transaction ran is the next batch, so
one fsync covers many deliveries. A batch that fails is retried one delivery at a time, so one
bad delivery cannot fail its neighbours. The process ends when its stdin closes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import struct
import sys
from collections.abc import Iterator
from typing import Any

import orjson
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from receiver.db import make_engine
from receiver.store import Delivery, Store

log = logging.getLogger("receiver")
MAX_BATCH = 256
_LENGTH = struct.Struct(">I")
Answer = tuple[int, str | None, str | None]  # seq, outcome, error


def frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


def delivery_frame(seq: int, delivery: Delivery) -> bytes:
    head = orjson.dumps([seq, delivery.webhook_id, delivery.received_at, delivery.source])
    return frame(head + b"\n" + delivery.text().encode())


def _parse_delivery(payload: bytes) -> tuple[int, Delivery]:
    head, raw = payload.split(b"\n", 1)
    seq, webhook_id, now, source = orjson.loads(head)
    return seq, Delivery(webhook_id, orjson.loads(raw), now, source, raw=raw)


class Frames:
    """Complete frames from a file descriptor: all that have arrived, without waiting for more."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()

    def _complete(self) -> Iterator[bytes]:
        start = 0
        while len(self.buffer) - start >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self.buffer, start)
            end = start + _LENGTH.size + length
            if len(self.buffer) < end:
                break
            yield bytes(self.buffer[start + _LENGTH.size : end])
            start = end
        del self.buffer[:start]

    def next_batch(self) -> list[bytes] | None:
        """Blocks until at least one frame is complete; None once the input has closed."""
        while not (frames := list(self._complete())):
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                return None
            self.buffer += chunk
        return frames


class Recorder:
    """One database connection, kept open between batches and reopened after an error."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._conn: Connection | None = None

    def record(self, batch: list[tuple[int, Delivery]]) -> list[Answer]:
        try:
            if self._conn is None:
                self._conn = self.store.engine.connect()
            outcomes = self.store.record_batch([d for _, d in batch], self._conn)
            return [(seq, outcome, None) for (seq, _), outcome in zip(batch, outcomes, strict=True)]
        except Exception as exc:  # a store error, or a bug: either must not take others down
            if not isinstance(exc, SQLAlchemyError):
                log.exception("recording failed")
            self.close()  # its state is unknown: the next batch starts afresh
            if len(batch) == 1:
                return [(batch[0][0], None, " ".join(str(exc).split())[:300])]
            log.warning("batch of %d failed (%s); writing one at a time", len(batch), exc)
            return [answer for one in batch for answer in self.record([one])]

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(SQLAlchemyError):  # the database may be gone
                self._conn.close()
            self._conn = None


def serve(stdin: int, stdout: int) -> None:
    frames = Frames(stdin)
    first = frames.next_batch()
    if first is None:
        return
    config: dict[str, Any] = orjson.loads(first[0])
    store = Store(make_engine(config["database_url"]), config["download_hosts"])
    recorder = Recorder(store)
    pending: list[bytes] | None = first[1:]
    while pending is not None:
        for start in range(0, len(pending), MAX_BATCH):
            answers = recorder.record(
                [_parse_delivery(p) for p in pending[start : start + MAX_BATCH]]
            )
            _write_all(stdout, frame(orjson.dumps(answers)))
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
