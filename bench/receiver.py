"""`make bench-receiver`: verified-and-stored deliveries/s and latency vs a verify-only baseline.

Both servers run as their own process (uvicorn, one worker) and get the same load from this
process: pre-signed, realistic Replicate deliveries (a start event, then a completed event
carrying embeddings) with unique webhook-ids, sent over keep-alive loopback connections by a
lean asyncio client. Afterwards every 2xx our receiver gave is looked up in its store: a delivery
acknowledged but not stored counts as lost.
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
from receiver.db import make_engine
from receiver.signature import decode_secret, sign
from receiver.tables import deliveries
from tests.support.receiving import postgres_database

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CONCURRENCY = 16


def deliveries_for(count: int, host: str) -> tuple[list[bytes], list[str]]:
    """`count` raw HTTP requests: alternating start and completed events of count/2 predictions."""
    key, now = decode_secret(SECRET), str(int(time.time()))
    vectors = [[round(0.001 * (i % 997) - 0.5, 6) for i in range(384)] for _ in range(2)]
    requests, ids = [], []
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
        writer.write(requests[index])
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        results.append((index, int(status_line.split()[1]), time.perf_counter() - start))
    writer.close()


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
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"bench: {command[2]} did not start; see {log}")


def measure(command: list[str], env: dict[str, str], count: int, log: Path) -> dict[str, float]:
    port = free_port()
    command = [*command, "--port", str(port)]
    process = serve(command, env, port, log)
    try:
        warm, _ = deliveries_for(200, f"127.0.0.1:{port}")
        asyncio.run(_load(port, warm))
        requests, ids = deliveries_for(count, f"127.0.0.1:{port}")
        results, seconds = asyncio.run(_load(port, requests))
    finally:
        process.terminate()
        process.wait()
    latencies = sorted(r[2] for r in results)
    return {
        "rate": len(results) / seconds,
        "p50": statistics.median(latencies) * 1e3,
        "p99": latencies[int(0.99 * (len(latencies) - 1))] * 1e3,
        "ok": sum(1 for r in results if r[1] == 200),
        "acked_ids": [ids[r[0]] for r in results if r[1] == 200],  # type: ignore[dict-item]
    }


def lost(database_url: str, acked: list[str]) -> int:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        stored = set(conn.execute(select(deliveries.c.webhook_id)).scalars())
    engine.dispose()
    return len(set(acked) - stored)


def compare(store: str, database_url: str, count: int, rounds: int, workdir: Path) -> None:
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
    base_runs, ours_runs, missing = [], [], 0
    for i in range(rounds):  # alternate: this machine's drift hits both sides
        base_runs.append(measure(baseline_cmd, env, count, workdir / f"baseline-{store}-{i}.log"))
        ours = measure(ours_cmd, env, count, workdir / f"ours-{store}-{i}.log")
        missing += lost(database_url, ours.pop("acked_ids"))  # type: ignore[arg-type]
        ours_runs.append(ours)
    base, ours = _median(base_runs), _median(ours_runs)
    print(
        f"[receiver/{store}] {count} signed deliveries x {rounds} alternating rounds (medians), "
        f"{CONCURRENCY} keep-alive connections"
    )
    for name, r in (
        ("baseline  standardwebhooks verify only", base),
        ("ours      verify + durable store", ours),
    ):
        print(f"  {name:<38} {r['rate']:7.0f}/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms")
    print(
        f"  ratio     throughput {ours['rate'] / base['rate']:.2f}x (goal >= 0.7x), "
        f"p99 {ours['p99'] / base['p99']:.2f}x (goal <= 2x), "
        f"lost {missing} of {sum(int(r['ok']) for r in ours_runs)} acknowledged (goal 0)"
    )


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in ("rate", "p50", "p99", "ok")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-receiver-") as work:
        workdir = Path(work)
        sqlite_url = f"sqlite:///{workdir / 'receiver.db'}"
        compare("sqlite", sqlite_url, args.deliveries, args.rounds, workdir)
        with postgres_database() as url:
            compare("postgresql", url, args.deliveries, args.rounds, workdir)


if __name__ == "__main__":
    main()
