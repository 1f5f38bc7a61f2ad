"""The download queue: backoff and dead letters, leases that are renewed, expire and resume,
claims that never share a job."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from sqlalchemy import event, insert

from receiver import tables
from receiver.downloads import (
    LEASE_SECONDS,
    STALE_PARTIAL_SECONDS,
    YIELD_SLOTS,
    Downloader,
    backoff,
)
from receiver.runtime import open_store
from receiver.store import Settlement, Turn
from tests.support.downloading import DownloadRig, claim, drain
from tests.support.loopback_http import FileServer
from tests.support.receiving import prediction


def test_failures_back_off_then_dead_letter(rig: DownloadRig, files: FileServer) -> None:
    files.routes["/flaky"] = (503, b"busy", {})
    rig.store.record(
        "m1", prediction("d2", "succeeded", output=f"{files.origin}/flaky"), rig.clock()
    )
    downloader = rig.downloader()
    for attempt in range(1, 4):
        assert downloader.step()
        assert not downloader.step()  # backing off: not due yet
        row = rig.store.file("d2", 0)
        assert row["attempts"] == attempt
        assert "HTTP 503" in row["last_error"]
        if attempt < 3:
            assert row["state"] == "queued"
            delay = row["next_attempt_at"] - rig.clock.now
            assert 0.5 * 2**attempt <= delay <= 1.5 * 2**attempt  # 2 s base, doubling, jitter
            rig.clock.now += delay
    assert rig.store.file("d2", 0)["state"] == "dead"
    assert files.hits["/flaky"] == 3


def test_a_job_left_running_by_a_dead_process_is_resumed(
    rig: DownloadRig, files: FileServer
) -> None:
    files.routes["/a.bin"] = (200, b"abc", {})
    rig.store.record(
        "m1", prediction("d3", "succeeded", output=f"{files.origin}/a.bin"), rig.clock()
    )
    assert len(claim(rig, 1)) == 1  # claimed, then the process died mid-download:
    rig.settings.receiver_output_dir.mkdir(parents=True)
    partial = rig.settings.receiver_output_dir / ".partial-of-the-dead-process"
    partial.write_bytes(b"ab")
    left_at = time.time() - STALE_PARTIAL_SECONDS - 1
    os.utime(partial, (left_at, left_at))
    # As after a restart: a new store and downloader over the same database.
    restarted = Downloader(open_store(rig.settings), rig.settings, rig.clock)
    assert not restarted.step()  # the lease still holds
    rig.clock.now += LEASE_SECONDS + 1  # 30 s: once 10 minutes
    drain(restarted)
    row = rig.store.file("d3", 0)
    assert (row["state"], row["attempts"]) == ("done", 2)
    assert files.hits["/a.bin"] == 1
    assert not partial.exists()


def test_backoff_doubles_with_jitter_and_a_cap() -> None:
    for attempts in range(1, 12):
        delay = backoff(attempts)
        expected = min(300.0, 2.0 * 2 ** (attempts - 1))
        assert 0.5 * expected <= delay <= 1.5 * expected


def test_concurrent_claims_never_share_a_job(rig: DownloadRig, files: FileServer) -> None:
    output = [f"{files.origin}/f{i}" for i in range(30)]
    rig.store.record("m1", prediction("d5", "succeeded", output=output), rig.clock())
    claimed: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        while jobs := claim(rig, 2, now=time.time()):
            with lock:
                claimed.extend(job.id for job in jobs)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 30
    assert len(set(claimed)) == 30


def test_a_long_download_keeps_its_lease(rig: DownloadRig, files: FileServer) -> None:
    files.routes["/long.npy"] = (200, b"0123", {})
    files.trickle["/long.npy"] = 0.4  # 1.6 s in all, under the 2 s deadline
    output = f"{files.origin}/long.npy"
    rig.store.record("m1", prediction("long", "succeeded", output=output), rig.clock())
    downloader = rig.downloader()
    assert downloader.step()  # claimed; running
    for _ in range(3):  # the queue's clock passes the lease twice over while the file runs
        rig.clock.now += LEASE_SECONDS * 0.6
        downloader.step()
        assert claim(rig, 1) == []  # renewed: no other worker may take it
    drain(downloader)
    row = rig.store.file("long", 0)
    assert (row["state"], row["attempts"]) == ("done", 1)
    assert files.hits["/long.npy"] == 1


def test_a_worker_whose_lease_ran_out_cannot_touch_the_next_claim(
    rig: DownloadRig, files: FileServer
) -> None:
    output = f"{files.origin}/contested.npy"
    rig.store.record("m1", prediction("contested", "succeeded", output=output), rig.clock())
    (first,) = claim(rig, 1)
    rig.clock.now += LEASE_SECONDS + 1  # the first worker stalled; its lease ran out
    (second,) = claim(rig, 1)
    assert second.attempts == first.attempts + 1
    late = Settlement(first.id, first.attempts, "dead", rig.clock(), last_error="late")
    rig.store.download_turn(
        Turn(
            now=rig.clock(),
            lease=LEASE_SECONDS,
            max_attempts=3,
            want=0,
            settled=[late],
            renew=[first],
        )
    )
    row = rig.store.file("contested", 0)
    assert (row["state"], row["attempts"], row["last_error"]) == ("running", 2, None)
    assert row["lease_until"] == rig.clock() + LEASE_SECONDS  # the second claim's, unchanged


def test_a_yielding_worker_runs_few_files_at_once_and_still_drains(
    rig: DownloadRig, files: FileServer
) -> None:
    output = []
    for i in range(3 * YIELD_SLOTS):
        files.routes[f"/y{i}.npy"] = (200, b"x", {})
        output.append(f"{files.origin}/y{i}.npy")
    rig.store.record("m1", prediction("busy", "succeeded", output=output), rig.clock())
    assert rig.settings.receiver_download_concurrency > YIELD_SLOTS
    downloader = Downloader(rig.store, rig.settings, rig.clock, yielding=lambda: True)
    assert downloader.step()
    started = [rig.store.file("busy", n)["state"] for n in range(len(output))]
    assert sum(state != "queued" for state in started) == YIELD_SLOTS
    drain(downloader)
    assert all(rig.store.file("busy", n)["state"] == "done" for n in range(len(output)))


def test_a_claim_walks_the_index_and_never_sorts_the_backlog(rig: DownloadRig) -> None:
    """After one large delivery the table's statistics lag (nothing has analysed it yet); the
    claim must still stop at the jobs it wants, not fetch and sort the whole backlog."""
    backlog = [
        {
            "prediction_id": "big",
            "n": n,
            "url": f"https://replicate.delivery/big/{n}.npy",
            "state": "queued",
            "attempts": 0,
            "next_attempt_at": rig.clock() - n % 7,
        }
        for n in range(20_000)
    ]
    with rig.store.engine.begin() as conn:
        conn.execute(insert(tables.files), backlog)
    plans: list[str] = []

    def explain(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "ORDER BY files.state, files.next_attempt_at" not in statement:
            return
        prefix = "EXPLAIN QUERY PLAN " if conn.dialect.name == "sqlite" else "EXPLAIN "
        in_same_transaction = cursor.connection.cursor()
        in_same_transaction.execute(prefix + statement, parameters)
        plans.append(" / ".join(str(row) for row in in_same_transaction.fetchall()))

    event.listen(rig.store.engine, "after_cursor_execute", explain)
    try:
        claimed = claim(rig, 16)
    finally:
        event.remove(rig.store.engine, "after_cursor_execute", explain)
    assert len(claimed) == 16
    assert all(job.n % 7 == 6 for job in claimed)  # the ones that fell due first
    (plan,) = plans
    assert "files_ready" in plan
    assert "Sort" not in plan, plan  # PostgreSQL
    assert "TEMP B-TREE" not in plan, plan  # SQLite
