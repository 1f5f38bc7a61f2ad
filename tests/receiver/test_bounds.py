"""What a sender that never finishes can hold: headers are checked before any body is read,
bodies in flight share one byte budget and have a deadline, half-sent headers and idle
connections are closed, connections are capped; a client that goes away leaves no traceback."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from localcog.loopback import serve_in_thread
from localcog.polling import poll
from receiver.app import create_app
from receiver.runtime import open_store
from receiver.settings import Settings, signing_keys
from receiver.signature import signed_headers
from tests.support.live import StartReceiver
from tests.support.receiving import KEY, on_sqlite, prediction, signed

PATH = "/webhooks/replicate"


def connect(url: str, timeout: float = 5) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def request_head(headers: dict[str, str], length: int) -> bytes:
    lines = [f"POST {PATH} HTTP/1.1", "host: receiver", f"content-length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(sock: socket.socket) -> int:
    """The status code of the response on `sock` (its first line is enough)."""
    first = sock.recv(4096).split(b"\r\n", 1)[0]
    return int(first.split()[1])


def genuine_head(length: int) -> tuple[bytes, dict[str, str]]:
    """A body of `length` bytes and the signed headers of that body."""
    head = b'{"id": "slow", "status": "starting", "pad": "'
    body = head + b"x" * (length - len(head) - 2) + b'"}'
    assert len(body) == length
    msg_id = f"msg_{length}_{time.monotonic_ns()}"
    return body, signed_headers(KEY, msg_id, str(int(time.time())), body)


@pytest.fixture
def bounded(receiver_settings: Settings) -> Iterator[str]:
    """A receiver app (in this process) with small limits: 1 s for a body, 100 KiB in flight."""
    settings = Settings.model_validate(
        {
            **receiver_settings.model_dump(),
            "receiver_body_timeout_seconds": 1.0,
            "receiver_max_bytes_in_flight": 100 * 1024,
        }
    )
    store = open_store(settings)
    with serve_in_thread(create_app(settings, signing_keys(settings.secrets()), store)) as url:
        yield url
    store.engine.dispose()


@pytest.mark.parametrize(
    "headers",
    [
        {},  # unsigned
        {"webhook-id": "m", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"},  # stale
        {"webhook-id": "m", "webhook-timestamp": str(int(time.time())), "webhook-signature": "x"},
    ],
)
def test_bad_headers_are_refused_before_the_body_arrives(
    bounded: str, headers: dict[str, str]
) -> None:
    with closing(connect(bounded)) as sock:
        sock.sendall(request_head(headers, 30_000) + b"{")  # and nothing more
        assert status_of(sock) == 401


def test_a_body_that_stalls_is_a_408_in_time(bounded: str) -> None:
    body, headers = genuine_head(2000)
    started = time.monotonic()
    with closing(connect(bounded)) as sock:
        sock.sendall(request_head(headers, len(body)) + body[:100])
        assert status_of(sock) == 408
    assert time.monotonic() - started < 4  # the deadline is 1 s


def test_bodies_in_flight_share_one_budget(bounded: str) -> None:
    """Two bodies of 60 KiB, each 55 KiB sent, against 100 KiB in flight: whichever reaches
    past the budget is a 503 at once; the other completes; then the budget is free again."""
    bodies = [genuine_head(60 * 1024) for _ in range(2)]
    socks = [connect(bounded) for _ in bodies]
    try:
        for sock, (body, headers) in zip(socks, bodies, strict=True):
            sock.sendall(request_head(headers, len(body)) + body[: 55 * 1024])
        answered, _, _ = select.select(socks, [], [], 5)
        assert len(answered) == 1  # the refused one; the other waits for the rest of its body
        assert status_of(answered[0]) == 503
        (waiting,) = [sock for sock in socks if sock is not answered[0]]
        body = bodies[socks.index(waiting)][0]
        waiting.sendall(body[55 * 1024 :])
        assert status_of(waiting) == 200
    finally:
        for sock in socks:
            sock.close()
    again_body, again_headers = genuine_head(60 * 1024)  # the budget was given back
    response = httpx.post(f"{bounded}{PATH}", content=again_body, headers=again_headers)
    assert response.status_code == 200


def trickle(sock: socket.socket, data: bytes) -> bool:
    """Send `data` a byte every 0.2 s (the slow sender being simulated: the pauses are the
    load, not a wait); True as soon as the receiver closes the connection."""
    sock.settimeout(0.2)
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def metric(url: str, line: str) -> float | None:
    for text in httpx.get(f"{url}/metrics").text.splitlines():
        if text.startswith(line + " "):
            return float(text.split()[-1])
    return None


def test_a_client_that_goes_away_leaves_no_traceback(
    started: StartReceiver, tmp_path: Path
) -> None:
    receiver = started(on_sqlite(tmp_path))
    body, headers = genuine_head(5000)
    with closing(connect(receiver.url)) as sock:
        sock.sendall(request_head(headers, len(body)) + body[:100])
    gone = 'receiver_deliveries_total{outcome="client_disconnected"}'
    poll(lambda: metric(receiver.url, gone), timeout=10, interval=0.05, what="the disconnect")
    log = next(tmp_path.glob("receiver-*.log")).read_text()
    assert "Traceback" not in log
    assert "Exception in ASGI application" not in log


def test_half_sent_headers_are_cut_off_however_slowly_they_trickle(
    started: StartReceiver, tmp_path: Path
) -> None:
    receiver = started(on_sqlite(tmp_path, RECEIVER_HEADER_TIMEOUT_SECONDS="1"))
    head = request_head({}, 10)
    started_at = time.monotonic()
    with closing(connect(receiver.url)) as sock:
        closed = trickle(sock, head[:-4])  # never the blank line that ends the headers
    assert closed, "the receiver waited for the whole trickle"
    assert time.monotonic() - started_at < 3


def test_connections_are_capped(started: StartReceiver, tmp_path: Path) -> None:
    receiver = started(on_sqlite(tmp_path, RECEIVER_MAX_CONNECTIONS="4"))
    idle = [connect(receiver.url) for _ in range(4)]
    try:
        raw, headers = signed(prediction("capped", "starting"))
        refused = httpx.post(f"{receiver.url}{PATH}", content=raw, headers=headers)
        assert refused.status_code == 503
    finally:
        for sock in idle:
            sock.close()

    def accepted() -> bool | None:
        response = httpx.post(f"{receiver.url}{PATH}", content=raw, headers=headers)
        return True if response.status_code == 200 else None

    poll(accepted, timeout=10, interval=0.05, what="a delivery once the idle ones closed")


def test_a_connection_answered_early_cannot_then_trickle_forever(
    started: StartReceiver, tmp_path: Path
) -> None:
    """A 401 before the body leaves the body unread: the connection still has a deadline."""
    receiver = started(on_sqlite(tmp_path, RECEIVER_HEADER_TIMEOUT_SECONDS="1"))
    started_at = time.monotonic()
    with closing(connect(receiver.url)) as sock:
        sock.sendall(request_head({}, 10_000))  # unsigned: refused before the body
        assert status_of(sock) == 401
        closed = trickle(sock, b"x" * 100)  # then the body a byte at a time, 20 s in all
    assert closed, "the receiver kept the connection for the whole trickle"
    assert time.monotonic() - started_at < 5


def test_unsigned_bodies_hold_only_the_bytes_they_send(bounded: str) -> None:
    """Headers of the right shape cost nothing to forge: declaring a large body must not
    reserve the budget for bytes that never come."""
    socks = []
    try:
        for _ in range(3):  # 3 x 60 KiB declared, against 100 KiB in flight
            sock = connect(bounded)
            _, headers = genuine_head(60 * 1024)
            sock.sendall(request_head(headers, 60 * 1024) + b"{")
            socks.append(sock)
        body, headers = genuine_head(2000)
        response = httpx.post(f"{bounded}{PATH}", content=body, headers=headers)
        assert response.status_code == 200  # the budget holds only what has arrived
    finally:
        for sock in socks:
            sock.close()
