"""The receiver as a process: start-up checks, its CLI, a SIGKILL under load, two processes."""

from __future__ import annotations

import signal
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from localcog.polling import poll
from localcog.postgres import scratch_database
from receiver.db import make_engine
from receiver.tables import deliveries, files, predictions
from tests.support.commands import children_of, run_receiver
from tests.support.live import LiveStandIn, StartReceiver
from tests.support.loopback_http import FileServer
from tests.support.receiving import SECRET, on_sqlite, prediction, signed
from tests.support.standin import STANDIN_SECRET, STANDIN_TOKEN


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
    result = run_receiver("serve", "--port", "9", **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("receiver: ")
    assert message in lines[0]
    assert "whsec_@@" not in lines[0]  # a secret's value is never printed


def test_secret_command_reads_the_default_secret(standin: LiveStandIn) -> None:
    result = run_receiver(
        "secret", REPLICATE_API_TOKEN=STANDIN_TOKEN, REPLICATE_BASE_URL=standin.url
    )
    assert (result.returncode, result.stdout.strip()) == (0, STANDIN_SECRET)
    refused = run_receiver("secret", REPLICATE_API_TOKEN="wrong", REPLICATE_BASE_URL=standin.url)
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1


def test_secret_fetched_at_start_and_send_test_delivers(
    started: StartReceiver, standin: LiveStandIn, tmp_path: Path
) -> None:
    receiver = started(
        {
            "REPLICATE_API_TOKEN": STANDIN_TOKEN,
            "REPLICATE_BASE_URL": standin.url,
            "RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        }
    )
    result = run_receiver(
        "send-test",
        "--url",
        f"{receiver.url}/webhooks/replicate",
        REPLICATE_WEBHOOK_SECRET=STANDIN_SECRET,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('200 {"status":"accepted"')
    wrong = run_receiver(
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
    started: StartReceiver, database_url: str, tmp_path: Path
) -> None:
    env = {
        "REPLICATE_WEBHOOK_SECRET": SECRET,
        "RECEIVER_DATABASE_URL": database_url,
        "RECEIVER_OUTPUT_DIR": str(tmp_path / "out"),
    }
    receiver = started(env)
    acked: list[str] = []
    stop = threading.Event()
    reached = threading.Event()
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


def test_two_processes_on_postgresql_apply_each_delivery_once(
    started: StartReceiver, tmp_path: Path
) -> None:
    server = FileServer()
    try:
        with scratch_database() as url:
            env = {
                "REPLICATE_WEBHOOK_SECRET": SECRET,
                "RECEIVER_DATABASE_URL": url,
                "RECEIVER_OUTPUT_DIR": str(tmp_path / "out"),
                "RECEIVER_DOWNLOAD_HOSTS": f"replicate.delivery {server.origin}",
                "RECEIVER_WORKER_POLL_SECONDS": "0.05",
            }
            first = started(env)
            second = started(env)
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

    def all_done() -> bool | None:
        with engine.connect() as conn:
            done = conn.execute(
                select(func.count()).select_from(files).where(files.c.state == "done")
            ).scalar()
        return True if done == expected else None

    try:
        poll(all_done, timeout, 0.05, f"{expected} files downloaded")
    finally:
        engine.dispose()


def test_its_worker_processes_end_with_it_even_on_sigkill(
    started: StartReceiver, tmp_path: Path
) -> None:
    receiver = started(on_sqlite(tmp_path))

    def both_started() -> dict[int, str] | None:
        children = children_of(receiver.process.pid)
        modules = " ".join(children.values())
        both = "receiver.writer_process" in modules and "receiver.download_process" in modules
        return children if both else None

    children = poll(both_started, timeout=30, interval=0.05, what="the worker processes")
    receiver.process.send_signal(signal.SIGKILL)
    receiver.process.wait()

    def all_gone() -> bool | None:
        alive = [pid for pid in children if Path(f"/proc/{pid}").exists()]
        return True if not alive else None

    poll(all_gone, timeout=30, interval=0.05, what="the worker processes to end")
