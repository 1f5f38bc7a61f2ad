"""The download queue at scale: one delivery whose output holds 200 000 files, drained from a
loopback file server while webhooks keep coming.

One receiver process (with its writer and download processes) serves the whole run. Its
webhook figures without a backlog are the baseline, measured on the same process just before
the backlog is queued; the same loads then run during the drain (saturation in rounds, the
median reported, then the fixed rate). The drain rate is reported
over the whole backlog and over the part with no webhook load, from the store's own count.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import Engine, func, select

from bench.load import SECRET, LoadResult, paced, saturate, signed_deliveries
from bench.servers import serve
from localcog.loopback import free_port
from localcog.polling import poll
from receiver.db import make_engine
from receiver.signature import decode_secret, signed_headers
from receiver.tables import files

DRAIN_TIMEOUT = 3600.0  # Replicate's hour: a backlog that takes longer has lost files


def backlog_body(count: int, origin: str) -> bytes:
    urls = ",".join(f'"{origin}/out/{i}.npy"' for i in range(count))
    return f'{{"id": "backlog", "status": "succeeded", "output": [{urls}]}}'.encode()


def done_files(engine: Engine) -> int:
    with engine.connect() as conn:
        query = select(func.count()).select_from(files).where(files.c.state == "done")
        return int(conn.execute(query).scalar_one())


@dataclass(frozen=True)
class Webhooks:
    """The webhook loads of one phase: saturation rounds (keep-alive), then the fixed rate."""

    rounds: list[LoadResult]
    fixed: LoadResult

    @property
    def kept(self) -> LoadResult:
        """The median round: a single round on this machine varies by a fifth."""
        return sorted(self.rounds, key=lambda result: result.rate)[len(self.rounds) // 2]


def webhooks(port: int, count: int, rate: float, rounds: int) -> Webhooks:
    host = f"127.0.0.1:{port}"
    results = []
    for _ in range(rounds):
        requests, _ = signed_deliveries(count, host)
        results.append(saturate(port, requests))
    fixed_requests, _ = signed_deliveries(int(rate * 10), host)
    return Webhooks(results, paced(port, fixed_requests, rate))


def drain(store: str, database_url: str, args: argparse.Namespace, workdir: Path) -> None:
    file_port = free_port()
    # It stands for replicate.delivery, which runs on Replicate's machines, not on ours: it is
    # niced like the download process, so that it too yields the cores to the webhooks.
    file_server = serve(  # answers every GET with the same small body: a file of 21 bytes
        ["nice", "-n", "10", sys.executable, "-m", "bench.noop_server", "--port", str(file_port)],
        {},
        file_port,
        workdir / f"backlog-{store}.files.log",
    )
    port = free_port()
    env = {
        "REPLICATE_WEBHOOK_SECRET": SECRET,
        "RECEIVER_DATABASE_URL": database_url,
        "RECEIVER_OUTPUT_DIR": str(workdir / f"backlog-{store}"),
        "RECEIVER_DOWNLOAD_HOSTS": f"http://127.0.0.1:{file_port}",
        "RECEIVER_WORKER_POLL_SECONDS": "0.2",
    }
    command = [sys.executable, "-m", "receiver", "serve", "--port", str(port)]
    receiver = serve(command, env, port, workdir / f"backlog-{store}.log")
    engine = make_engine(database_url)
    try:
        webhooks(port, args.deliveries, args.rate, 1)  # warm-up
        before = webhooks(port, args.deliveries, args.rate, args.rounds)
        body = backlog_body(args.files, f"http://127.0.0.1:{file_port}")
        headers = signed_headers(decode_secret(SECRET), "msg_backlog", str(int(time.time())), body)
        queued_at = time.perf_counter()
        response = httpx.post(
            f"http://127.0.0.1:{port}/webhooks/replicate",
            content=body,
            headers=headers,
            timeout=300,
        )
        response.raise_for_status()
        during = webhooks(port, args.deliveries, args.rate, args.rounds)
        quiet_from = time.perf_counter()
        quiet_done = done_files(engine)  # also what was drained while the webhooks ran
        poll(
            lambda: True if done_files(engine) == args.files else None,
            timeout=DRAIN_TIMEOUT,
            interval=0.5,
            what=f"{args.files} files downloaded",
        )
        finished = time.perf_counter()
    finally:
        receiver.terminate()
        receiver.wait()
        file_server.terminate()
        file_server.wait()
        engine.dispose()
    drain_rates = DrainRates(
        overall=args.files / (finished - queued_at),
        with_webhooks=quiet_done / (quiet_from - queued_at),
        alone=(args.files - quiet_done) / (finished - quiet_from),
        seconds=finished - queued_at,
    )
    report(store, args, before, during, drain_rates)


@dataclass(frozen=True)
class DrainRates:
    """Files per second: over the whole backlog, while the webhook loads ran, and after."""

    overall: float
    with_webhooks: float
    alone: float
    seconds: float


def report(
    store: str,
    args: argparse.Namespace,
    before: Webhooks,
    during: Webhooks,
    rates: DrainRates,
) -> None:
    kept_before = before.kept
    kept_during = during.kept
    print(
        f"[backlog/{store}] {args.files} files queued by one delivery, served on loopback; "
        "webhooks on the same receiver process before and during the drain"
    )
    print(
        f"  webhooks  {kept_before.rate:6.0f}/s without a backlog, {kept_during.rate:6.0f}/s "
        f"during the drain: {kept_during.rate / kept_before.rate:.2f}x (goal >= 0.8x); "
        f"at {args.rate:.0f}/s p99 {before.fixed.percentile_ms(0.99):.2f} ms vs "
        f"{during.fixed.percentile_ms(0.99):.2f} ms"
    )
    print(
        f"            medians of {args.rounds} rounds of {args.deliveries}: without "
        f"{', '.join(f'{r.rate:.0f}' for r in before.rounds)}; during "
        f"{', '.join(f'{r.rate:.0f}' for r in during.rounds)}"
    )
    print(
        f"  drain     {args.files} files in {rates.seconds:.0f} s: {rates.overall:.0f}/s overall; "
        f"{rates.with_webhooks:.0f}/s while the webhook loads ran, {rates.alone:.0f}/s after "
        "(goal >= 500/s)"
    )
