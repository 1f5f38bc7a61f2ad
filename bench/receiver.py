"""`make bench-receiver`: verified-and-stored deliveries/s and latency vs a verify-only baseline,
then a 200 000-file download backlog drained while webhooks keep coming.

Both servers run as their own process (uvicorn, one worker) and get the same load from this
process (`bench/load.py`): pre-signed, realistic Replicate deliveries (a start event, then a
completed event carrying embeddings) with unique webhook-ids. Three loads: saturation over
keep-alive connections, saturation with a new connection per delivery, and a fixed offered rate
below both sides' capacity (latency not inflated by queueing at saturation). The same client
against a no-op server (`bench/noop_server.py`) shows its own ceiling in the same run.
Afterwards every 2xx our receiver gave is looked up in its store: a delivery acknowledged but
not stored counts as lost. The backlog part is `bench/backlog.py`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from bench import backlog, scratch
from bench.load import CONNECTIONS, SECRET, LoadResult, paced, saturate, signed_deliveries
from bench.servers import serve
from localcog.loopback import free_port
from localcog.postgres import scratch_database
from localcog.processes import stop_on_signals
from receiver.db import make_engine
from receiver.tables import deliveries

FIXED_SECONDS = 10  # per round at the fixed offered rate
PARTS = ("comparison", "backlog")
STORES = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Measurement:
    """One server process under the three loads."""

    kept: LoadResult  # saturation, keep-alive connections
    fresh: LoadResult  # saturation, a new connection per delivery
    fixed: LoadResult  # the fixed offered rate
    acknowledged: list[str]  # webhook-ids answered 200


def measure(
    command: list[str], env: dict[str, str], count: int, rate: float, log: Path
) -> Measurement:
    """Both saturation loads, then latency at `rate` deliveries/s, on one server process."""
    port = free_port()
    process = serve([*command, "--port", str(port)], env, port, log)
    host = f"127.0.0.1:{port}"
    try:
        warm, _ = signed_deliveries(200, host)
        saturate(port, warm)
        kept_requests, kept_ids = signed_deliveries(count, host)
        kept = saturate(port, kept_requests)
        fresh_requests, fresh_ids = signed_deliveries(count // 2, host)
        fresh = saturate(port, fresh_requests, new_connections=True)
        fixed_requests, fixed_ids = signed_deliveries(int(rate * FIXED_SECONDS), host)
        fixed = paced(port, fixed_requests, rate)
    finally:
        process.terminate()
        process.wait()
    acknowledged = [kept_ids[i] for i in kept.acknowledged()]
    acknowledged += [fresh_ids[i] for i in fresh.acknowledged()]
    acknowledged += [fixed_ids[i] for i in fixed.acknowledged()]
    return Measurement(kept, fresh, fixed, acknowledged)


def lost(database_url: str, acked: list[str]) -> int:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        stored = set(conn.execute(select(deliveries.c.webhook_id)).scalars())
    engine.dispose()
    return len(set(acked) - stored)


@dataclass(frozen=True)
class Figures:
    """One side's medians over the rounds."""

    kept_rate: float
    kept_p99: float
    fresh_rate: float
    fresh_p99: float
    fixed_p50: float
    fixed_p99: float

    @classmethod
    def median_of(cls, runs: list[Measurement]) -> Figures:
        def median(value: Callable[[Measurement], float]) -> float:
            return statistics.median(value(run) for run in runs)

        return cls(
            kept_rate=median(lambda r: r.kept.rate),
            kept_p99=median(lambda r: r.kept.percentile_ms(0.99)),
            fresh_rate=median(lambda r: r.fresh.rate),
            fresh_p99=median(lambda r: r.fresh.percentile_ms(0.99)),
            fixed_p50=median(lambda r: r.fixed.percentile_ms(0.5)),
            fixed_p99=median(lambda r: r.fixed.percentile_ms(0.99)),
        )

    def row(self, name: str) -> str:
        return (
            f"  {name:<34} {self.kept_rate:6.0f}/s p99 {self.kept_p99:6.2f} ms"
            f" | {self.fresh_rate:6.0f}/s p99 {self.fresh_p99:6.2f} ms"
            f" | p50 {self.fixed_p50:5.2f} ms p99 {self.fixed_p99:6.2f} ms"
        )


def compare(
    store: str, database_url: str, count: int, rounds: int, rate: float, workdir: Path
) -> None:
    env = {
        "REPLICATE_WEBHOOK_SECRET": SECRET,
        "RECEIVER_DATABASE_URL": database_url,
        "RECEIVER_OUTPUT_DIR": str(workdir / "outputs"),
    }
    sides = {
        "noop": [sys.executable, "-m", "bench.noop_server"],
        "baseline": [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.baseline_receiver:app",
            "--log-level",
            "warning",
        ],
        "ours": [sys.executable, "-m", "receiver", "serve"],
    }
    runs: dict[str, list[Measurement]] = {side: [] for side in sides}
    for i in range(rounds):  # alternate: this machine's drift hits every side
        for side, command in sides.items():
            log = workdir / f"{store}-{i}.{side}.log"
            runs[side].append(measure(command, env, count, rate, log))
    missing = sum(lost(database_url, run.acknowledged) for run in runs["ours"])
    acknowledged = sum(len(run.acknowledged) for run in runs["ours"])
    noop = Figures.median_of(runs["noop"])
    base = Figures.median_of(runs["baseline"])
    ours = Figures.median_of(runs["ours"])
    print(
        f"[receiver/{store}] {count} signed deliveries over {CONNECTIONS} keep-alive "
        f"connections, {count // 2} with a new connection each, {FIXED_SECONDS} s at "
        f"{rate:.0f}/s offered; {rounds} alternating rounds, medians"
    )
    print(f"  {'':<34} {'keep-alive':<24} | {'new connection':<24} | at {rate:.0f}/s offered")
    print(noop.row("ceiling   this client, no-op server"))
    print(base.row("baseline  standardwebhooks verify"))
    print(ours.row("ours      verify + durable store"))
    print(
        f"  ratio     throughput {ours.kept_rate / base.kept_rate:.2f}x keep-alive, "
        f"{ours.fresh_rate / base.fresh_rate:.2f}x new connections (goal >= 0.7x); "
        f"p99 at {rate:.0f}/s {ours.fixed_p99 / base.fixed_p99:.2f}x (goal <= 2x); "
        f"lost {missing} of {acknowledged} acknowledged (goal 0)"
    )
    print(
        f"  ceiling   of the client's own: baseline {base.kept_rate / noop.kept_rate:.0%} and "
        f"ours {ours.kept_rate / noop.kept_rate:.0%} keep-alive, baseline "
        f"{base.fresh_rate / noop.fresh_rate:.0%} and ours {ours.fresh_rate / noop.fresh_rate:.0%}"
        " new connections"
    )


def main() -> None:
    stop_on_signals()  # a ^C or kill still stops the servers and removes the work folder
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--rate", type=float, default=500, help="offered deliveries/s for the latency load"
    )
    parser.add_argument("--files", type=int, default=200_000, help="the download backlog")
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure"
    )
    parser.add_argument(
        "--stores", nargs="+", choices=STORES, default=list(STORES), help="on which stores"
    )
    args = parser.parse_args()
    # Under the repository, where the receiver's own output folder (./data) lives, not /tmp:
    # on this project's machines creating a file under /tmp costs 0.7 ms of CPU, 30 times what
    # it costs elsewhere on the same disk, and the backlog creates 200 000.
    with scratch("bench-receiver-") as work:
        workdir = Path(work)
        for part in args.parts:
            for store in args.stores:
                with store_url(store, workdir / f"{part}.db") as url:
                    if part == "comparison":
                        compare(store, url, args.deliveries, args.rounds, args.rate, workdir)
                    else:
                        backlog.drain(store, url, args, workdir)


@contextmanager
def store_url(store: str, sqlite_file: Path) -> Iterator[str]:
    """A fresh store of this kind: an SQLite file, or a scratch PostgreSQL database."""
    if store == "sqlite":
        yield f"sqlite:///{sqlite_file}"
    else:
        with scratch_database() as url:
            yield url


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("bench: stopped; the servers it started are stopped too")
