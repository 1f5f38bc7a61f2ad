"""The receiver benchmark's load generator: pre-built HTTP/1.1 requests over loopback sockets.

Lean on purpose (one asyncio loop, raw sockets, no HTTP library): its ceiling, measured against
`bench/noop_server.py` in the same run, is far above what the servers under test reach, so a
ratio between them is theirs, not the client's. Three loads:

- saturation over keep-alive connections: as fast as the server answers;
- saturation with a new connection per request, as many senders do;
- a fixed offered rate (open loop): each request is due at its time and its latency counts from
  then, so a server that falls behind shows it instead of slowing the client down.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass

from receiver.signature import decode_secret, sign

CONNECTIONS = 16
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # what the servers under test verify with


@dataclass(frozen=True)
class Exchange:
    index: int  # which request
    status: int
    seconds: float  # from sending (or, paced, from its due time) to the whole response


@dataclass(frozen=True)
class LoadResult:
    exchanges: list[Exchange]
    seconds: float  # wall time of the whole load

    @property
    def rate(self) -> float:
        return len(self.exchanges) / self.seconds

    def percentile_ms(self, fraction: float) -> float:
        latencies = sorted(e.seconds for e in self.exchanges)
        return latencies[int(fraction * (len(latencies) - 1))] * 1e3

    def acknowledged(self) -> list[int]:
        return [e.index for e in self.exchanges if e.status == 200]


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """Send one request, read its whole response; return the status code."""
    writer.write(request)
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def _one_off(port: int, request: bytes) -> int:
    """One request on a connection of its own, closed afterwards."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await _exchange(reader, writer, request)
    finally:
        writer.close()


async def _sender(
    port: int, queue: asyncio.Queue[int], requests: list[bytes], new_connections: bool
) -> list[Exchange]:
    exchanges = []
    kept = None if new_connections else await asyncio.open_connection("127.0.0.1", port)
    while not queue.empty():
        index = queue.get_nowait()
        start = time.perf_counter()
        if kept is None:
            status = await _one_off(port, requests[index])
        else:
            status = await _exchange(kept[0], kept[1], requests[index])
        exchanges.append(Exchange(index, status, time.perf_counter() - start))
    if kept is not None:
        kept[1].close()
    return exchanges


async def _saturate(port: int, requests: list[bytes], new_connections: bool) -> LoadResult:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(requests)):
        queue.put_nowait(i)
    start = time.perf_counter()
    senders = [_sender(port, queue, requests, new_connections) for _ in range(CONNECTIONS)]
    lanes = await asyncio.gather(*senders)
    return LoadResult([e for lane in lanes for e in lane], time.perf_counter() - start)


async def _paced_lane(
    port: int, lane: int, rate: float, start: float, requests: list[bytes]
) -> list[Exchange]:
    """Every CONNECTIONS-th request from `lane`, each sent at its due time (or at once when
    late); latency counts from the due time, so a server that falls behind shows it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    exchanges = []
    for index in range(lane, len(requests), CONNECTIONS):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        status = await _exchange(reader, writer, requests[index])
        exchanges.append(Exchange(index, status, time.perf_counter() - due))
    writer.close()
    return exchanges


async def _paced(port: int, requests: list[bytes], rate: float) -> LoadResult:
    start = time.perf_counter() + 0.1  # every connection open before the first is due
    lanes = await asyncio.gather(
        *(_paced_lane(port, lane, rate, start, requests) for lane in range(CONNECTIONS))
    )
    return LoadResult([e for lane in lanes for e in lane], time.perf_counter() - start)


def saturate(port: int, requests: list[bytes], new_connections: bool = False) -> LoadResult:
    """Every request, CONNECTIONS at a time, as fast as the server answers."""
    return asyncio.run(_saturate(port, requests, new_connections))


def paced(port: int, requests: list[bytes], rate: float) -> LoadResult:
    """Every request at `rate` per second, open loop, over CONNECTIONS keep-alive connections."""
    return asyncio.run(_paced(port, requests, rate))


def signed_deliveries(count: int, host: str) -> tuple[list[bytes], list[str]]:
    """`count` raw HTTP requests: alternating start and completed events of count/2 predictions."""
    key = decode_secret(SECRET)
    now = str(int(time.time()))
    vectors = [[round(0.001 * (i % 997) - 0.5, 6) for i in range(384)] for _ in range(2)]
    requests = []
    ids = []
    for i in range(count):
        pid = f"bench{i // 2:07d}"
        body = {
            "id": pid,
            "version": "v" * 64,
            "status": "processing" if i % 2 == 0 else "succeeded",
            "input": {"texts": ["a", "b"]},
            "output": None if i % 2 == 0 else vectors,
            "logs": "",
            "error": None,
            "metrics": {"predict_time": 0.02},
            "created_at": "2026-11-23T08:00:00Z",
            "urls": {"get": f"https://api.replicate.com/v1/predictions/{pid}"},
        }
        raw = json.dumps(body).encode()
        msg_id = f"msg_{uuid.uuid4().hex}"
        head = (
            f"POST /webhooks/replicate HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
            f"webhook-id: {msg_id}\r\nwebhook-timestamp: {now}\r\n"
            f"webhook-signature: {sign(key, msg_id, now, raw)}\r\n\r\n"
        )
        requests.append(head.encode() + raw)
        ids.append(msg_id)
    return requests, ids
