"""The model benchmark's load generator: predictions posted to Cog, closed loop or open loop.

Lean for the same reason as bench/load.py (one asyncio loop, raw keep-alive sockets, requests
encoded before the clock starts): its CPU per request is a small part of a prediction's, and
its own ceiling is measured against bench/noop_server.py in the same run.

A server with fewer slots than clients gets what Replicate's queue gives an instance: the
clients share a semaphore of that many slots, so no more predictions are in flight than the
server takes, and a request's latency counts from the moment its client wanted to send it,
queueing included. coglet frees a slot a moment after it answers, so a request can still meet
409 "At capacity"; it is sent again a millisecond later and counted.

Saturation says how much a server carries; the latency a user sees is taken at a fixed
offered rate (`fixed_rate`): requests arrive as a Poisson process, whatever the server does,
and each one's latency counts from its arrival, so a server that falls behind shows it instead
of slowing the clients down (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

SUCCEEDED = b'"status":"succeeded"'
NOOP_ANSWER = b'{"status":"accepted"}'  # bench/noop_server.py's, for the client's ceiling


@dataclass(frozen=True)
class Outcome:
    texts: int
    seconds: float  # from wanting to send to the whole answer, queue and retries included


@dataclass(frozen=True)
class LoadRun:
    outcomes: list[Outcome]
    seconds: float
    refused: int  # 409s sent again
    client_cpu: float  # CPU seconds this process spent
    gpu_busy: float | None = None  # mean GPU utilisation in percent, where there is a GPU

    @property
    def requests_per_second(self) -> float:
        return len(self.outcomes) / self.seconds

    @property
    def texts_per_second(self) -> float:
        return self.texts / self.seconds

    @property
    def texts(self) -> int:
        return sum(o.texts for o in self.outcomes)

    def percentile_ms(self, fraction: float) -> float:
        latencies = sorted(o.seconds for o in self.outcomes)
        return latencies[int(fraction * (len(latencies) - 1))] * 1e3


def encode(port: int, texts: Sequence[str]) -> bytes:
    """One POST /predictions for these texts, JSON output, as raw HTTP/1.1."""
    body = json.dumps({"input": {"texts": list(texts)}}).encode()
    head = (
        f"POST /predictions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    status_line = await reader.readline()
    length = None
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    if length is None:
        raise RuntimeError(f"bench: an answer without Content-Length: {status_line!r}")
    return int(status_line.split()[1]), await reader.readexactly(length)


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class _Shared:
    requests: list[tuple[int, bytes]]  # (texts, encoded request), taken in turn
    deadline: float | None  # None: each request once, then stop
    slots: asyncio.Semaphore
    next_index: int = 0
    refused: int = 0

    def more(self) -> bool:
        if self.deadline is None:
            return self.next_index < len(self.requests)
        return time.perf_counter() < self.deadline


async def _send(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, shared: _Shared
) -> None:
    """One prediction to its end: a 409 (a slot freed late) is sent again a millisecond later."""
    status, body = await _exchange(reader, writer, request)
    while status == 409:
        shared.refused += 1
        await asyncio.sleep(0.001)
        status, body = await _exchange(reader, writer, request)
    if status != 200 or (SUCCEEDED not in body and body != NOOP_ANSWER):
        raise RuntimeError(f"bench: prediction not answered: {status} {body[:200]!r}")


async def _client(port: int, shared: _Shared) -> list[Outcome]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    outcomes = []
    while shared.more():
        texts, request = shared.requests[shared.next_index % len(shared.requests)]
        shared.next_index += 1
        wanted = time.perf_counter()
        async with shared.slots:
            if shared.deadline is not None and time.perf_counter() >= shared.deadline:
                break  # waited past the end in the queue: not sent
            await _send(reader, writer, request, shared)
        outcomes.append(Outcome(texts, time.perf_counter() - wanted))
    writer.close()
    return outcomes


async def _run(
    port: int, requests: list[tuple[int, bytes]], clients: int, slots: int, seconds: float | None
) -> LoadRun:
    cpu = time.process_time()
    start = time.perf_counter()
    deadline = None if seconds is None else start + seconds
    shared = _Shared(requests, deadline, asyncio.Semaphore(slots))
    lanes = await asyncio.gather(*(_client(port, shared) for _ in range(clients)))
    wall = time.perf_counter() - start
    outcomes = [o for lane in lanes for o in lane]
    return LoadRun(outcomes, wall, shared.refused, time.process_time() - cpu)


def closed_loop(
    port: int, requests: list[tuple[int, bytes]], clients: int, slots: int, seconds: float
) -> LoadRun:
    """`clients` clients, each sending its next request when its last is answered, for
    `seconds`; at most `slots` in flight. Requests are taken from the list in turn."""
    return asyncio.run(_run(port, requests, clients, slots, seconds))


def each_once(port: int, requests: list[tuple[int, bytes]], clients: int, slots: int) -> LoadRun:
    """Every request once, by `clients` clients taking the next when their last is answered;
    at most `slots` in flight. The same work for every server: its wall time compares."""
    return asyncio.run(_run(port, requests, clients, slots, None))


async def _arrival(
    port: int, texts: int, request: bytes, arrived: float, shared: _Shared, idle: list[Connection]
) -> Outcome:
    async with shared.slots:
        connection = idle.pop() if idle else await asyncio.open_connection("127.0.0.1", port)
        await _send(*connection, request, shared)
        idle.append(connection)
    return Outcome(texts, time.perf_counter() - arrived)


async def _open_loop(
    port: int, requests: list[tuple[int, bytes]], rate: float, slots: int, seconds: float
) -> LoadRun:
    cpu = time.process_time()
    shared = _Shared(requests, None, asyncio.Semaphore(slots))
    idle: list[Connection] = []  # keep-alive connections between predictions
    arrivals = random.Random(0)  # the same arrival times for every server
    tasks = []
    start = time.perf_counter()
    due = start
    while due < start + seconds:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        texts, request = requests[len(tasks) % len(requests)]
        tasks.append(asyncio.create_task(_arrival(port, texts, request, due, shared, idle)))
        due += arrivals.expovariate(rate)
    outcomes = await asyncio.gather(*tasks)
    for _, writer in idle:
        writer.close()
    wall = time.perf_counter() - start
    return LoadRun(list(outcomes), wall, shared.refused, time.process_time() - cpu)


def fixed_rate(
    port: int, requests: list[tuple[int, bytes]], rate: float, slots: int, seconds: float
) -> LoadRun:
    """Requests arriving at `rate` a second on average (Poisson, the same times for every
    server) for `seconds`, each answered in full; at most `slots` in flight, the others queue
    in the client. Latency counts from arrival; the run lasts until the last is answered."""
    return asyncio.run(_open_loop(port, requests, rate, slots, seconds))
