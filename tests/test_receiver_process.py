"""The receiver as a process: start-up checks, its CLI, a SIGKILL under load, two processes."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from receiver.db import make_engine
from receiver.refusals import LINES_PER_WINDOW as LINES
from receiver.refusals import RefusalLog
from receiver.tables import deliveries, files, predictions
from standin.local import ReceiverProcess, receiver_process
from tests.support.commands import CLEAN_ENV, run_module
from tests.support.live import LiveStandIn
from tests.support.receiving import SECRET, prediction, signed
from tests.support.standin import STANDIN_SECRET, STANDIN_TOKEN


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_module("receiver", *args, env=env, timeout=60)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no webhook secret: set REPLICATE_WEBHOOK_SECRET"),
        ({"REPLICATE_WEBHOOK_SECRET": "whsec_"}, "entry 1: a webhook secret must decode to 24-64"),
        ({"REPLICATE_WEBHOOK_SECRET": f"{SECRET} whsec_@@"}, "entry 2: a webhook secret must be"),
        (
            {"REPLICATE_WEBHOOK_SECRET": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
            "must start with whsec_",
        ),
        (
            {"REPLICATE_WEBHOOK_SECRET": SECRET, "RECEIVER_TOLERANCE_SECONDS": "soon"},
            "invalid setting RECEIVER_TOLERANCE_SECONDS",
        ),
        (
            {
                "REPLICATE_WEBHOOK_SECRET": SECRET,
                "RECEIVER_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x?connect_timeout=2",
            },
            "unavailable: Connection refused",
        ),
        (
            {"REPLICATE_API_TOKEN": "r8_x", "REPLICATE_BASE_URL": "http://127.0.0.1:9"},
            "could not fetch the webhook secret from Replicate",
        ),
    ],
)
def test_refuses_to_start_with_one_clear_line(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    env.setdefault("RECEIVER_DATABASE_URL", f"sqlite:///{tmp_path / 'r.db'}")
    env.setdefault("RECEIVER_OUTPUT_DIR", str(tmp_path / "out"))
    result = run_cli("serve", "--port", "9", **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("receiver: ")
    assert message in lines[0]
    assert "whsec_@@" not in lines[0]  # a secret's value is never printed


def test_secret_command_reads_the_default_secret(standin: LiveStandIn) -> None:
    result = run_cli("secret", REPLICATE_API_TOKEN=STANDIN_TOKEN, REPLICATE_BASE_URL=standin.url)
    assert (result.returncode, result.stdout.strip()) == (0, STANDIN_SECRET)
    refused = run_cli("secret", REPLICATE_API_TOKEN="wrong", REPLICATE_BASE_URL=standin.url)
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Any]:
    """Start receiver processes with given env; stop them all afterwards."""
    with ExitStack() as stack:

        def start(env: dict[str, str]) -> ReceiverProcess:
            log = tmp_path / f"receiver-{uuid.uuid4().hex[:8]}.log"
            return stack.enter_context(receiver_process({**CLEAN_ENV, **env}, log))

        yield start


def test_secret_fetched_at_start_and_send_test_delivers(
    started: Any, standin: LiveStandIn, tmp_path: Path
) -> None:
    receiver = started(
        {
            "REPLICATE_API_TOKEN": STANDIN_TOKEN,
            "REPLICATE_BASE_URL": standin.url,
            "RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        }
    )
    result = run_cli(
        "send-test",
        "--url",
        f"{receiver.url}/webhooks/replicate",
        REPLICATE_WEBHOOK_SECRET=STANDIN_SECRET,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('200 {"status":"accepted"')
    wrong = run_cli(
        "send-test", "--url", f"{receiver.url}/webhooks/replicate", REPLICATE_WEBHOOK_SECRET=SECRET
    )
    assert wrong.returncode == 1
    assert wrong.stdout.startswith("401 ")


def blast(
    url: str, count: int, acked: list[str], stop: threading.Event, reached: threading.Event
) -> None:
    """Send `count` distinct signed deliveries from 8 threads; note each 2xx; set `reached`
    once 200 are acknowledged."""
    lock = threading.Lock()

    def one(i: int) -> None:
        if stop.is_set():
            return
        msg_id = f"msg_{uuid.uuid4().hex}"
        raw, headers = signed(prediction(f"load-{i}", "succeeded", output=[[0.5] * 8]), msg_id)
        try:
            response = httpx.post(
                f"{url}/webhooks/replicate", content=raw, headers=headers, timeout=10
            )
        except httpx.TransportError:
            return  # killed mid-request: not acknowledged, Replicate would retry
        if response.status_code == 200:
            with lock:
                acked.append(msg_id)
                if len(acked) >= 200:
                    reached.set()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(count)))


def count_deliveries(database_url: str, ids: list[str]) -> int:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        found = set(conn.execute(select(deliveries.c.webhook_id)).scalars())
    engine.dispose()
    return len(found & set(ids))


def test_sigkill_under_load_loses_no_acknowledged_delivery(
    started: Any, database_url: str, tmp_path: Path
) -> None:
    env = {
        "REPLICATE_WEBHOOK_SECRET": SECRET,
        "RECEIVER_DATABASE_URL": database_url,
        "RECEIVER_OUTPUT_DIR": str(tmp_path / "out"),
    }
    receiver = started(env)
    acked: list[str] = []
    stop, reached = threading.Event(), threading.Event()
    load = threading.Thread(target=blast, args=(receiver.url, 3000, acked, stop, reached))
    load.start()
    assert reached.wait(timeout=120)  # kill it in the middle of the load, not before or after
    receiver.process.send_signal(signal.SIGKILL)
    receiver.process.wait()
    stop.set()
    load.join()
    assert 200 <= len(acked) < 3000
    started(env)  # a restart runs migrations again over the surviving data
    assert count_deliveries(database_url, acked) == len(acked)


def test_two_processes_on_postgresql_apply_each_delivery_once(started: Any, tmp_path: Path) -> None:
    from tests.support.loopback_http import FileServer
    from tests.support.receiving import postgres_database

    server = FileServer()
    try:
        with postgres_database() as url:
            env = {
                "REPLICATE_WEBHOOK_SECRET": SECRET,
                "RECEIVER_DATABASE_URL": url,
                "RECEIVER_OUTPUT_DIR": str(tmp_path / "out"),
                "RECEIVER_DOWNLOAD_HOSTS": f"replicate.delivery {server.origin}",
                "RECEIVER_WORKER_POLL_SECONDS": "0.05",
            }
            first, second = started(env), started(env)
            bodies = []
            for i in range(40):
                server.routes[f"/f{i}.bin"] = (200, f"file {i}".encode(), {})
                out = [f"{server.origin}/f{i}.bin"]
                bodies.append(signed(prediction(f"two-{i}", "succeeded", output=out)))

            def both(item: tuple[bytes, dict[str, str]]) -> list[int]:
                raw, headers = item  # the same delivery reaches both processes, as retries can
                return [
                    httpx.post(
                        f"{r.url}/webhooks/replicate", content=raw, headers=headers, timeout=30
                    ).json()["status"]
                    == "accepted"
                    for r in (first, second)
                ]

            with ThreadPoolExecutor(8) as pool:
                accepted = [sum(pair) for pair in pool.map(both, bodies)]
            assert accepted == [1] * 40  # exactly one process applied each delivery

            engine = make_engine(url)
            with engine.connect() as conn:
                assert conn.execute(select(func.count()).select_from(deliveries)).scalar() == 40
                assert conn.execute(select(func.count()).select_from(predictions)).scalar() == 40
            engine.dispose()
            wait_for_downloads(url, 40)  # both processes' workers share the queue
            assert first.process.poll() is None
            assert second.process.poll() is None
            assert all(server.hits[f"/f{i}.bin"] == 1 for i in range(40))
    finally:
        server.close()


def wait_for_downloads(url: str, expected: int, timeout: float = 60) -> None:
    """Poll the store (another process writes it) until `expected` files are done."""
    engine = make_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                done = conn.execute(
                    select(func.count()).select_from(files).where(files.c.state == "done")
                ).scalar()
            if done == expected:
                return
            time.sleep(0.05)
        raise AssertionError(f"{done} of {expected} files downloaded in {timeout} s")
    finally:
        engine.dispose()


# --- refused deliveries in the log ---------------------------------------------------------


def log_of(tmp_path: Path) -> str:
    """The log of the one receiver process a test started (written before it answers)."""
    (log,) = tmp_path.glob("receiver-*.log")
    return log.read_text()


def refusal_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "refused webhook:" in line]


def post(url: str, raw: bytes, headers: dict[str, str]) -> int:
    response = httpx.post(f"{url}/webhooks/replicate", content=raw, headers=headers, timeout=30)
    return response.status_code


def test_refused_webhooks_are_logged_without_secrets(started: Any, tmp_path: Path) -> None:
    receiver = started(
        {
            "REPLICATE_WEBHOOK_SECRET": SECRET,
            "RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
            "RECEIVER_OUTPUT_DIR": str(tmp_path / "out"),
            "RECEIVER_MAX_BODY_BYTES": "2048",
        }
    )
    body = prediction("p-log", "succeeded", output=[[0.125] * 4])
    wrong_key = signed(body, "msg_wrong_key", key=b"w" * 32)
    stale = signed(body, "msg_stale", timestamp=time.time() - 3600)
    not_json = signed(b"not json", "msg_not_json")
    too_big = signed(prediction("p-big", "succeeded", output="x" * 4096), "msg_too_big")
    good = signed(body, "msg_good")
    sent = [
        post(receiver.url, *wrong_key),
        post(receiver.url, *stale),
        post(receiver.url, *not_json),
        post(receiver.url, *too_big),
        post(receiver.url, b"{}", {"content-type": "application/json"}),
        post(receiver.url, *good),
    ]
    assert sent == [401, 401, 400, 413, 401, 200]
    log = log_of(tmp_path)
    lines = refusal_lines(log)
    expected = [
        ("401 signature verification failed: signature_mismatch", "msg_wrong_key"),
        ("401 signature verification failed: timestamp_too_old", "msg_stale"),
        ("400 body is not JSON", "msg_not_json"),
        ("413 body over 2048 bytes", "msg_too_big"),
        ("401 signature verification failed: missing_headers", "-"),
    ]
    assert len(lines) == len(expected), log
    for line, (reason, webhook_id) in zip(lines, expected, strict=True):
        assert "WARNING" in line
        assert f"refused webhook: {reason} (webhook-id {webhook_id}, client 127.0.0.1)" in line
    assert "msg_good" not in log  # accepted deliveries are counted in /metrics, not logged
    for _, headers in (wrong_key, stale, not_json, too_big, good):
        assert headers["webhook-signature"].split(",", 1)[1] not in log
    assert SECRET.removeprefix("whsec_") not in log
    assert "0.125" not in log  # nor any body


def test_refusals_are_rate_limited_and_the_rest_counted(started: Any, tmp_path: Path) -> None:
    receiver = started(
        {
            "REPLICATE_WEBHOOK_SECRET": SECRET,
            "RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
            "RECEIVER_OUTPUT_DIR": str(tmp_path / "out"),
        }
    )
    flood = [signed(prediction(f"f{i}", "starting"), key=b"f" * 32) for i in range(LINES + 7)]
    assert {post(receiver.url, *delivery) for delivery in flood} == {401}
    assert len(refusal_lines(log_of(tmp_path))) == LINES
    receiver.stop()  # the count of unlogged refusals is written at the latest on shutdown
    lines = refusal_lines(log_of(tmp_path))
    assert len(lines) == LINES + 1
    assert f"refused webhook: 7 more not logged (at most {LINES} lines per 10 s)" in lines[-1]


def test_the_next_window_starts_with_the_count_of_what_was_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    refusals = RefusalLog(
        logging.getLogger("receiver.test"), limit=2, window=10, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, "receiver.test"):
        for i in range(5):
            refusals.refused(401, "signature mismatch", f"msg_{i}", "192.0.2.1")
        now[0] += 10
        refusals.refused(400, "body is not JSON", None, None)
    assert [r.getMessage() for r in caplog.records] == [
        "refused webhook: 401 signature mismatch (webhook-id msg_0, client 192.0.2.1)",
        "refused webhook: 401 signature mismatch (webhook-id msg_1, client 192.0.2.1)",
        "refused webhook: 3 more not logged (at most 2 lines per 10 s)",
        "refused webhook: 400 body is not JSON (webhook-id -, client -)",
    ]
