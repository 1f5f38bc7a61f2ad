"""When the store cannot commit, deliveries get a 503 in time (Replicate retries) and /healthz
says so: a lock held by someone else (both databases), a full disk (SQLite on a tiny tmpfs of
its own). Nothing acknowledged is lost, and the receiver recovers when the trouble goes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from localcog.loopback import serve_in_thread
from localcog.polling import poll
from receiver.app import create_app
from receiver.runtime import open_store
from receiver.settings import Settings, signing_keys
from standin.local import receiver_process
from tests.support.commands import CLEAN_ENV, children_of
from tests.support.live import StartReceiver
from tests.support.receiving import READ_TOKEN, SECRET, deliver, on_sqlite, prediction, read

WAIT = 1.0  # RECEIVER_STORE_TIMEOUT_SECONDS in these tests


@pytest.fixture
def settings(receiver_settings: Settings) -> Settings:
    return Settings.model_validate(
        {**receiver_settings.model_dump(), "receiver_store_timeout_seconds": WAIT}
    )


@pytest.fixture
def url(settings: Settings) -> Iterator[str]:
    store = open_store(settings)
    with serve_in_thread(create_app(settings, signing_keys(settings.secrets()), store)) as url:
        yield url
    store.engine.dispose()


@contextmanager
def every_write_blocked(database_url: str) -> Iterator[None]:
    """Hold, from another connection, the locks every commit of the receiver needs."""
    parsed = make_url(database_url)
    if parsed.drivername.startswith("sqlite"):
        conn: Any = sqlite3.connect(str(parsed.database), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")  # the write lock: readers go on, writers wait
    else:
        conn = psycopg.connect(parsed.set(drivername="postgresql").render_as_string(False))
        conn.execute("LOCK TABLE predictions, deliveries, heartbeat IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        conn.rollback()
        conn.close()


def blocked(settings: Settings) -> AbstractContextManager[None]:
    return every_write_blocked(settings.receiver_database_url)


def test_a_held_lock_is_a_503_in_time_and_healthz_says_so(url: str, settings: Settings) -> None:
    with blocked(settings):
        started = time.monotonic()
        with ThreadPoolExecutor(20) as pool:
            responses = list(
                pool.map(lambda i: deliver(url, prediction(f"w{i}", "starting")), range(20))
            )
        waited = time.monotonic() - started
        assert [r.status_code for r in responses] == [503] * 20
        assert {r.json()["error"] for r in responses} == {"store unavailable, retry later"}
        assert waited < 6 * WAIT  # once 29 s each on PostgreSQL, with no end in sight
        health = httpx.get(f"{url}/healthz", timeout=30)
        assert health.status_code == 503
        assert health.json() == {"status": "unavailable", "store": "ok", "writer": "cannot commit"}

    def accepted() -> bool | None:
        response = deliver(url, prediction("after", "starting"))
        return True if response.status_code == 200 else None

    poll(accepted, timeout=30, interval=0.1, what="a delivery once the lock is gone")
    assert httpx.get(f"{url}/healthz", timeout=30).json()["writer"] == "ok"


# A shell that mounts a 1 MiB tmpfs at $DISK in a mount namespace of its own (unprivileged:
# `unshare --map-root-user`), then becomes the receiver.
ON_A_TINY_DISK = 'mount -t tmpfs -o size=1m tmpfs "$DISK" && exec "$@"'


def test_a_full_disk_is_a_503_and_loses_nothing(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    env = {
        **CLEAN_ENV,
        "DISK": str(disk),
        "REPLICATE_WEBHOOK_SECRET": SECRET,
        "RECEIVER_API_TOKEN": READ_TOKEN,
        "RECEIVER_DATABASE_URL": f"sqlite:///{disk / 'receiver.db'}",
        "RECEIVER_OUTPUT_DIR": str(tmp_path / "outputs"),
        "RECEIVER_STORE_TIMEOUT_SECONDS": "2",
    }
    unshare = shutil.which("unshare")  # util-linux: on every Debian
    assert unshare is not None
    under = [unshare, "--mount", "--map-root-user", "sh", "-c", ON_A_TINY_DISK, "sh"]
    with receiver_process(env, tmp_path / "receiver.log", under=under) as receiver:
        acknowledged = []
        answers = []
        # Large deliveries until they no longer fit, then tiny ones until not even those do
        # (a heartbeat rewrites one page: it fits as long as a tiny delivery does).
        for size in (16384, 0):
            for i in range(400):
                pid = f"full{size}-{i}"
                response = deliver(receiver.url, prediction(pid, "starting", logs="x" * size))
                answers.append(response.status_code)
                if response.status_code == 200:
                    acknowledged.append(pid)
                if answers[-3:] == [503, 503, 503]:
                    break
        assert set(answers) == {200, 503}, answers
        assert len(acknowledged) > 10
        health = httpx.get(f"{receiver.url}/healthz", timeout=30)
        assert health.status_code == 503
        assert health.json()["writer"] == "cannot commit"
        for prediction_id in acknowledged:  # every 200 is stored, and can still be read
            assert read(receiver.url, f"/predictions/{prediction_id}").status_code == 200
    log = (tmp_path / "receiver.log").read_text()
    assert "database or disk is full" in log
    assert "Traceback" not in log


def test_a_writer_that_stops_answering_is_replaced(started: StartReceiver, tmp_path: Path) -> None:
    """A writer process hung for good (here: stopped) must not leave every delivery to time
    out forever: it is killed, and the next delivery starts another."""
    receiver = started(on_sqlite(tmp_path, RECEIVER_STORE_TIMEOUT_SECONDS="1"))

    def writer() -> int | None:
        for pid, command in children_of(receiver.process.pid).items():
            if "receiver.writer_process" in command:
                return pid
        return None

    stopped = poll(writer, timeout=30, interval=0.05, what="the writer process")
    os.kill(stopped, signal.SIGSTOP)
    try:
        started_at = time.monotonic()
        hung = [deliver(receiver.url, prediction(f"hung{i}", "starting")) for i in range(3)]
        assert [r.status_code for r in hung] == [503] * 3
        assert time.monotonic() - started_at < 10  # each within its 1 s deadline

        def accepted() -> bool | None:
            response = deliver(receiver.url, prediction("after-hang", "starting"))
            return True if response.status_code == 200 else None

        poll(accepted, timeout=30, interval=0.2, what="a delivery on a new writer process")
        assert writer() != stopped
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stopped, signal.SIGKILL)
