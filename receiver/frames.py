"""The wire format between a receiver and its writer process (`receiver.writer_process`).

Every message is a frame: a 4-byte big-endian length, then that many bytes.

- first frame, receiver to writer: the store's configuration (`StoreConfig.to_json`);
- then one frame per request: a delivery, `[seq, webhook_id, received_at, source]` + newline +
  the raw JSON body (the body's own bytes travel untouched, so the store can keep them as
  sent), or a heartbeat probe, `[seq]` alone (/healthz: can a commit still reach the disk?);
- answers, writer to receiver: one frame per transaction, `[[seq, outcome, error], …]`
  (`outcome` is the delivery's, or "alive" for a probe; `error` is null, or a reason the
  receiver turns into a 503).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Literal

import orjson

from receiver.store import Delivery, Outcome

LENGTH = struct.Struct(">I")
Answered = Outcome | Literal["alive"]
Answer = tuple[int, Answered | None, str | None]  # seq, outcome, error
WriterRequest = tuple[int, Delivery | None]  # seq, and the delivery; None for a heartbeat probe


def frame(payload: bytes) -> bytes:
    return LENGTH.pack(len(payload)) + payload


def delivery_frame(seq: int, delivery: Delivery) -> bytes:
    head = orjson.dumps([seq, delivery.webhook_id, delivery.received_at, delivery.source])
    return frame(head + b"\n" + delivery.text().encode())


def probe_frame(seq: int) -> bytes:
    return frame(orjson.dumps([seq]))


def parse_request(payload: bytes) -> WriterRequest:
    head, newline, raw = payload.partition(b"\n")
    fields = orjson.loads(head)
    if not newline:
        return fields[0], None
    delivery = Delivery(fields[1], orjson.loads(raw), fields[2], fields[3], raw=raw)
    return fields[0], delivery


def answers_frame(answers: list[Answer]) -> bytes:
    return frame(orjson.dumps(answers))


def parse_answers(payload: bytes) -> list[Answer]:
    return [(seq, outcome, error) for seq, outcome, error in orjson.loads(payload)]


class Frames:
    """Complete frames from a file descriptor: all that have arrived, without waiting for more."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()

    def _complete(self) -> Iterator[bytes]:
        start = 0
        while len(self.buffer) - start >= LENGTH.size:
            (length,) = LENGTH.unpack_from(self.buffer, start)
            end = start + LENGTH.size + length
            if len(self.buffer) < end:
                break
            yield bytes(self.buffer[start + LENGTH.size : end])
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
