"""`make bench-receiver`: verified-and-stored deliveries/s and latency vs a verify-only baseline.

Both servers run as their own process (uvicorn, one worker) and get the same load from this
process: pre-signed, realistic Replicate deliveries (a start event, then a completed event
carrying embeddings) with unique webhook-ids, sent over keep-alive loopback connections by a
lean asyncio client. Two loads: as fast as the server answers (throughput), then a fixed offered
rate below both sides' capacity (latency not inflated by queueing at saturation). The same client
against a no-op server (`bench/noop_server.py`) shows its own ceiling in the same run. Afterwards
every 2xx our receiver gave is looked up in its store: a delivery acknowledged but not stored
counts as lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import select

from localcog import REPO
from localcog.loopback import free_port
from localcog.polling import PollTimeoutError, poll
from localcog.postgres import scratch_database
from receiver.db import make_engine
from receiver.signature import decode_secret, sign
from receiver.tables import deliveries

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CONCURRENCY = 16


def deliveries_for(count: int, host: str) -> tuple[list[bytes], list[str]]:
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


async def _connection(
    port: int,
    queue: asyncio.Queue[int],
    requests: list[bytes],
    results: list[tuple[int, int, float]],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while not queue.empty():
        index = queue.get_nowait()
        start = time.perf_counter()
        status = await _exchange(reader, writer, requests[index])
        results.append((index, status, time.perf_counter() - start))
    writer.close()


async def _paced_connection(
    port: int, lane: int, rate: float, start: float, requests: list[bytes]
) -> list[tuple[int, int, float]]:
    """Every CONCURRENCY-th request from `lane`, each sent at its due time (or at once when
    late); latency counts from the due time, so a server that falls behind shows it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    results = []
    for index in range(lane, len(requests), CONCURRENCY):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        status = await _exchange(reader, writer, requests[index])
        results.append((index, status, time.perf_counter() - due))
    writer.close()
    return results


async def _paced_load(
    port: int, requests: list[bytes], rate: float
) -> list[tuple[int, int, float]]:
    start = time.perf_counter() + 0.1  # every connection open before the first is due
    lanes = [_paced_connection(port, lane, rate, start, requests) for lane in range(CONCURRENCY)]
    return [result for lane in await asyncio.gather(*lanes) for result in lane]


async def _load(port: int, requests: list[bytes]) -> tuple[list[tuple[int, int, float]], float]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(requests)):
        queue.put_nowait(i)
    results: list[tuple[int, int, float]] = []
    start = time.perf_counter()
    await asyncio.gather(*(_connection(port, queue, requests, results) for _ in range(CONCURRENCY)))
    return results, time.perf_counter() - start


def serve(command: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    import httpx

    process = subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )

    def healthy() -> bool | None:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        except httpx.TransportError:
            return None
        return True if response.status_code == 200 else None

    try:
        poll(healthy, timeout=60, interval=0.05, what=f"{command[2]} start")
    except PollTimeoutError:
        process.kill()
        raise SystemExit(f"bench: {command[2]} did not start; see {log}") from None
    return process


def _percentile(latencies: list[float], fraction: float) -> float:
    """In milliseconds, from sorted seconds."""
    return latencies[int(fraction * (len(latencies) - 1))] * 1e3


def measure(
    command: list[str], env: dict[str, str], count: int, rate: float, log: Path
) -> dict[str, float]:
    """Throughput at saturation, then latency at `rate` deliveries/s, on one server process."""
    port = free_port()
    command = [*command, "--port", str(port)]
    process = serve(command, env, port, log)
    host = f"127.0.0.1:{port}"
    try:
        warm, _ = deliveries_for(200, host)
        asyncio.run(_load(port, warm))
        requests, ids = deliveries_for(count, host)
        results, seconds = asyncio.run(_load(port, requests))
        paced_requests, paced_ids = deliveries_for(count // 2, host)
        paced = asyncio.run(_paced_load(port, paced_requests, rate))
    finally:
        process.terminate()
        process.wait()
    latencies = sorted(r[2] for r in results)
    paced_latencies = sorted(r[2] for r in paced)
    acked = [ids[r[0]] for r in results if r[1] == 200]
    acked += [paced_ids[r[0]] for r in paced if r[1] == 200]
    return {
        "rate": len(results) / seconds,
        "p50": _percentile(latencies, 0.5),
        "p99": _percentile(latencies, 0.99),
        "paced_p50": _percentile(paced_latencies, 0.5),
        "paced_p99": _percentile(paced_latencies, 0.99),
        "ok": sum(1 for r in results + paced if r[1] == 200),
        "acked_ids": acked,  # type: ignore[dict-item]
    }


def lost(database_url: str, acked: list[str]) -> int:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        stored = set(conn.execute(select(deliveries.c.webhook_id)).scalars())
    engine.dispose()
    return len(set(acked) - stored)


def compare(
    store: str, database_url: str, count: int, rounds: int, rate: float, workdir: Path
) -> None:
    env = {
        "REPLICATE_WEBHOOK_SECRET": SECRET,
        "RECEIVER_DATABASE_URL": database_url,
        "RECEIVER_OUTPUT_DIR": str(workdir / "outputs"),
    }
    baseline_cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.baseline_receiver:app",
        "--log-level",
        "warning",
    ]
    ours_cmd = [sys.executable, "-m", "receiver", "serve"]
    noop_cmd = [sys.executable, "-m", "bench.noop_server"]
    noop_runs = []
    base_runs = []
    ours_runs = []
    missing = 0
    for i in range(rounds):  # alternate: this machine's drift hits every side
        log = workdir / f"{store}-{i}"
        noop_runs.append(measure(noop_cmd, env, count, rate, log.with_suffix(".noop.log")))
        base_runs.append(measure(baseline_cmd, env, count, rate, log.with_suffix(".base.log")))
        ours = measure(ours_cmd, env, count, rate, log.with_suffix(".ours.log"))
        missing += lost(database_url, ours.pop("acked_ids"))  # type: ignore[arg-type]
        ours_runs.append(ours)
    noop = _median(noop_runs)
    base = _median(base_runs)
    ours = _median(ours_runs)
    print(
        f"[receiver/{store}] {count} signed deliveries x {rounds} alternating rounds (medians), "
        f"{CONCURRENCY} keep-alive connections; then {count // 2} at {rate:.0f}/s offered"
    )
    for name, r in (
        ("ceiling   this client vs a no-op server", noop),
        ("baseline  standardwebhooks verify only", base),
        ("ours      verify + durable store", ours),
    ):
        print(
            f"  {name:<40} {r['rate']:7.0f}/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms"
            f"  | at {rate:.0f}/s: p50 {r['paced_p50']:6.2f} ms  p99 {r['paced_p99']:6.2f} ms"
        )
    print(
        f"  ratio     throughput {ours['rate'] / base['rate']:.2f}x (goal >= 0.7x), "
        f"p99 {ours['p99'] / base['p99']:.2f}x (goal <= 2x), "
        f"p99 at {rate:.0f}/s {ours['paced_p99'] / base['paced_p99']:.2f}x, "
        f"lost {missing} of {sum(int(r['ok']) for r in ours_runs)} acknowledged (goal 0)"
    )
    print(
        f"  ceiling   baseline at {base['rate'] / noop['rate']:.0%} of the client's ceiling, "
        f"ours at {ours['rate'] / noop['rate']:.0%}"
    )


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = ("rate", "p50", "p99", "paced_p50", "paced_p99", "ok")
    return {key: statistics.median(r[key] for r in runs) for key in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--rate", type=float, default=1000, help="offered deliveries/s for the latency load"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-receiver-") as work:
        workdir = Path(work)
        sqlite_url = f"sqlite:///{workdir / 'receiver.db'}"
        compare("sqlite", sqlite_url, args.deliveries, args.rounds, args.rate, workdir)
        with scratch_database() as url:
            compare("postgresql", url, args.deliveries, args.rounds, args.rate, workdir)


if __name__ == "__main__":
    main()
