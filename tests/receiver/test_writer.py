"""The writer process: its framing, and what a receiver does when the process dies."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from localcog.postgres import scratch_database
from receiver.db import make_engine, migrate
from receiver.frames import Frames, frame
from receiver.store import Delivery, Store
from receiver.writer_process import Recorder
from tests.support.live import LiveReceiver
from tests.support.receiving import deliver, prediction, read


def writer_processes() -> set[int]:
    """Live children of this test process running the writer."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:  # it exited while we looked
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"writer_process" in cmdline:
            found.add(int(stat.parent.name))
    return found


def test_frames_come_out_whole_whatever_the_reads_deliver() -> None:
    read_end, write_end = os.pipe()
    frames = Frames(read_end)
    data = frame(b"one") + frame(b"two") + frame(b"three")
    os.write(write_end, data[:9])  # the first frame and a piece of the second
    assert frames.next_batch() == [b"one"]
    os.write(write_end, data[9:])
    assert frames.next_batch() == [b"two", b"three"]  # all that has arrived is one batch
    os.close(write_end)
    assert frames.next_batch() is None
    os.close(read_end)


def test_a_killed_writer_process_costs_a_retry_not_a_delivery(receiver: LiveReceiver) -> None:
    url = receiver.url
    assert deliver(url, prediction("w1", "starting")).status_code == 200
    (old,) = writer_processes()
    os.kill(old, signal.SIGKILL)

    response = deliver(url, prediction("w1", "succeeded"), msg_id="msg_after_kill")
    if response.status_code == 503:  # it reached the dead process: Replicate would retry
        assert response.json() == {"error": "store unavailable, retry later"}
        response = deliver(url, prediction("w1", "succeeded"), msg_id="msg_after_kill")
    assert response.status_code == 200
    assert response.json()["status"] == "accepted"
    assert read(url, "/predictions/w1").json()["status"] == "succeeded"
    assert writer_processes() - {old}  # a new writer took over


def test_one_bad_delivery_does_not_fail_its_batch() -> None:
    # The HTTP layer refuses ids over 255 characters; built directly, one reaches PostgreSQL,
    # which refuses it for its column: the batch is retried one delivery at a time.
    with scratch_database() as url:
        engine = make_engine(url)
        migrate(engine)
        recorder = Recorder(Store(engine, []))
        batch = [
            (1, Delivery("msg_1", prediction("ok1", "starting"), 1.0)),
            (2, Delivery("msg_2", prediction("x" * 300, "starting"), 1.0)),
            (3, Delivery("msg_3", prediction("ok2", "starting"), 1.0)),
        ]
        answers = recorder.record_deliveries(batch)
        recorder.close()
        engine.dispose()
    assert [(seq, outcome) for seq, outcome, _ in answers] == [
        (1, "accepted"),
        (2, None),
        (3, "accepted"),
    ]
    assert "value too long" in (answers[1][2] or "")
