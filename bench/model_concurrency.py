"""`make bench-model`, many small requests: 32 clients against the real Cog server.

Runners, each under `python -m cog.server.http`, in alternating rounds with the same requests:
ours (concurrent predictions sharing forward passes), the one-slot runner it replaced
(bench/one_slot_predict.py), the naive sentence-transformers predictor (bench/naive_predict.py),
and, as the Cog server's own ceiling, a runner that returns zeros (bench/noop_runner.py). The
client's ceiling, against bench/noop_server.py, comes first. Two loads: every request one
search-box query (4 to 24 tokens), and requests of 1, 8, 64 and 512 texts of 4 to 250 tokens in
turn. Then latency at two fixed offered rates of one-query requests (Poisson arrivals, the same
for every runner): 3/4 of what the one-slot runner carries, and 3/4 of what ours carries, each
a fresh server per runner and round. Last, the cost of a million embeddings from the measured
rates at the price of the Replicate hardware this machine is (CPU, or a T4, L40S or H100 by the
card's name). On a GPU each load's line also gives the card's mean utilisation (bench/gpu.py).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bench import gpu
from bench.corpus import mixed_texts, query_texts
from bench.prediction_load import LoadRun, closed_loop, each_once, encode, fixed_rate
from bench.servers import serve
from embedder.engine import load_tokenizer
from localcog import REPO
from localcog.loopback import free_port
from localcog.server import RUNNER, cog_server

CLIENTS = 32
MIXED_SIZES = (1, 8, 64, 512)
# Mixed sizes are a fixed amount of work, each request once (4 680 texts): over a time window,
# a 512-text request still running at the end would count for one server and not another.
MIXED_REQUESTS = 32
CONTENDERS = {
    "no model": "bench/noop_runner.py:Runner",  # the server's own ceiling
    "ours": RUNNER,
    "one slot": "bench/one_slot_predict.py:Runner",
    "naive": "bench/naive_predict.py:Runner",
}
# The offered rates for latency: this share of a runner's saturated requests/s, so the server
# is busy but not overloaded (a fixed rate, unlike the closed loop, does not slow down with it).
UTILISATION = 0.75
# Replicate's prices per second (replicate.com/pricing, 2026; ../shared/reference/FACTS.md).
PRICES = {"CPU": 0.000100, "T4": 0.000225, "L40S": 0.000975, "H100": 0.001525}

Requests = list[tuple[int, bytes]]


@dataclass(frozen=True)
class Load:
    name: str
    requests: Callable[[int], Requests]  # for a port
    seconds: float | None  # None: each request once (a fixed amount of work)

    def run(self, port: int, slots: int) -> LoadRun:
        if self.seconds is None:
            return each_once(port, self.requests(port), CLIENTS, slots)
        return closed_loop(port, self.requests(port), CLIENTS, slots, self.seconds)


def loads(seconds: float) -> list[Load]:
    tokenizer = load_tokenizer(REPO / "weights")
    queries = query_texts(4096, tokenizer, seed=1)
    texts = mixed_texts(4096, tokenizer, seed=1)

    def one_text(port: int) -> Requests:
        return [(1, encode(port, [q])) for q in queries]

    def mixed(port: int) -> Requests:
        requests = []
        start = 0
        for i in range(MIXED_REQUESTS):
            size = MIXED_SIZES[i % len(MIXED_SIZES)]
            chunk = [texts[(start + k) % len(texts)] for k in range(size)]
            requests.append((size, encode(port, chunk)))
            start += size
        return requests

    return [Load("1 text", one_text, seconds), Load("mixed", mixed, None)]


def client_ceiling(requests: Callable[[int], Requests], seconds: float, log: Path) -> LoadRun:
    port = free_port()
    server = serve([sys.executable, "-m", "bench.noop_server", "--port", str(port)], {}, port, log)
    try:
        return closed_loop(port, requests(port), CLIENTS, CLIENTS, seconds)
    finally:
        server.kill()
        server.wait()


def measure(runner: str, log: Path, all_loads: list[Load]) -> dict[str, LoadRun]:
    """Start the runner's server, warm it up, run each load (GPU utilisation sampled where
    there is one); the server's slots as it says."""
    with cog_server(log, runner=runner, ready_timeout=300) as server:
        port = int(server.url.rsplit(":", 1)[1])
        slots = server.slots
        warm = all_loads[0].requests(port)
        closed_loop(port, warm, CLIENTS, min(slots, CLIENTS), 2)
        runs = {}
        for load in all_loads:
            with gpu.sampled() as utilisation:
                run = load.run(port, slots)
            runs[load.name] = dataclasses.replace(run, gpu_busy=utilisation.mean())
        return runs


def measure_rates(
    runner: str, log: Path, requests: Callable[[int], Requests], rates: list[float], seconds: float
) -> list[LoadRun]:
    """Start the runner's server, warm it up, offer each rate for `seconds`."""
    with cog_server(log, runner=runner, ready_timeout=300) as server:
        port = int(server.url.rsplit(":", 1)[1])
        closed_loop(port, requests(port), CLIENTS, min(server.slots, CLIENTS), 2)
        return [fixed_rate(port, requests(port), rate, server.slots, seconds) for rate in rates]


def median_run(runs: list[LoadRun]) -> LoadRun:
    """The run of median requests/s (rounds are odd: a real run, not a mean of two)."""
    return sorted(runs, key=lambda r: r.requests_per_second)[len(runs) // 2]


def report(load: Load, by_contender: dict[str, list[LoadRun]], rounds: int) -> None:
    amount = "each request once" if load.seconds is None else f"{load.seconds:.0f} s each"
    print(f"  load: {load.name}, {amount}, median of {rounds}")
    for name, runs in by_contender.items():
        run = median_run(runs)
        line = (
            f"    {name:<9} {run.requests_per_second:7.1f} requests/s {run.texts_per_second:7.1f}"
            f" texts/s  p50 {run.percentile_ms(0.5):7.1f} ms  p99 {run.percentile_ms(0.99):7.1f}"
            f" ms  409s resent {run.refused}"
        )
        if run.gpu_busy is not None:
            line += f"  GPU busy {run.gpu_busy:.0f}%"
        if load.name == "mixed":
            singles = LoadRun([o for o in run.outcomes if o.texts == 1], run.seconds, 0, 0)
            line += f"  1-text slowest of {len(singles.outcomes)} {singles.percentile_ms(1):.0f} ms"
        print(line)
    ours = median_run(by_contender["ours"])
    for name in ("one slot", "naive"):
        other = median_run(by_contender[name])
        print(
            f"    ours vs {name}: {ours.requests_per_second / other.requests_per_second:.2f}x"
            f" requests/s, {ours.texts_per_second / other.texts_per_second:.2f}x texts/s"
        )


def report_rates(rates: list[float], by_contender: dict[str, list[list[LoadRun]]]) -> None:
    rounds = len(by_contender["ours"])
    print(f"  load: 1 text at fixed offered rates (Poisson), the run of median p99 of {rounds}")
    for index, rate in enumerate(rates):
        for name, per_round in by_contender.items():
            runs = sorted((r[index] for r in per_round), key=lambda r: r.percentile_ms(0.99))
            run = runs[len(runs) // 2]
            print(
                f"    {rate:6.1f}/s {name:<9} answered {run.requests_per_second:6.1f}/s"
                f"  p50 {run.percentile_ms(0.5):8.1f} ms  p99 {run.percentile_ms(0.99):8.1f} ms"
            )


def median_p99(rounds: list[list[LoadRun]], index: int) -> float:
    values = sorted(r[index].percentile_ms(0.99) for r in rounds)
    return values[len(values) // 2]


def hardware(card: str | None) -> list[str]:
    """Replicate's hardware whose price fits a rate measured on `card` (None: the CPU): the
    card's own where its name says which (a rate measured on an H200 is not an L40S's)."""
    if card is None:
        return ["CPU"]
    return [name for name in PRICES if name != "CPU" and name in card]


def cost_table(rates: dict[str, float]) -> None:
    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    names = hardware(card)
    where = card or "this CPU"
    if not names:
        print(f"  cost: {where} is none of Replicate's priced hardware ({', '.join(PRICES)})")
        return
    print(f"  cost of 1 million embeddings, ours: the rate on {where} at Replicate's price")
    for name in names:
        for load, rate in rates.items():
            dollars = PRICES[name] / rate * 1e6
            print(f"    {name:<5} {load:<7} {rate:7.1f} texts/s  ${dollars:6.2f} per million")


def run(seconds: float, rounds: int) -> None:
    all_loads = loads(seconds)
    results: dict[str, dict[str, list[LoadRun]]] = {load.name: {} for load in all_loads}
    names = list(CONTENDERS)
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as logs:
        ceiling = client_ceiling(all_loads[0].requests, seconds, Path(logs) / "noop-server.log")
        print(f"[cog, {CLIENTS} clients] many small requests through Cog's HTTP server")
        print(
            f"  ceiling   this client, no-op server  {ceiling.requests_per_second:7.0f}"
            f" requests/s, {ceiling.client_cpu / ceiling.seconds:.0%} of a core"
        )
        for i in range(rounds):  # alternate, each round in another order: drift hits every side
            for name in names[i % len(names) :] + names[: i % len(names)]:
                runner = CONTENDERS[name]
                runs = measure(runner, Path(logs) / f"{name}-{i}.log".replace(" ", "-"), all_loads)
                for load_name, load_run in runs.items():
                    results[load_name].setdefault(name, []).append(load_run)
        ours_one = median_run(results["1 text"]["ours"])
        one_slot = median_run(results["1 text"]["one slot"])
        rates = [
            UTILISATION * one_slot.requests_per_second,
            UTILISATION * ours_one.requests_per_second,
        ]
        at_rates: dict[str, list[list[LoadRun]]] = {}
        for i in range(rounds):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                log = Path(logs) / f"{name}-rates-{i}.log".replace(" ", "-")
                rate_runs = measure_rates(
                    CONTENDERS[name], log, all_loads[0].requests, rates, seconds
                )
                at_rates.setdefault(name, []).append(rate_runs)
    for load in all_loads:
        report(load, results[load.name], rounds)
    report_rates(rates, at_rates)
    share = ours_one.requests_per_second / ceiling.requests_per_second
    print(f"  client    ours at 1 text ran at {share:.1%} of the client's own ceiling")
    print(
        f"  goal      1 text: {ours_one.requests_per_second / one_slot.requests_per_second:.2f}x"
        f" the one-slot requests/s (goal >= 4x); p99 at {rates[0]:.0f}/s (3/4 of one slot's"
        f" rate) {median_p99(at_rates['ours'], 0):.1f} ms vs one slot"
        f" {median_p99(at_rates['one slot'], 0):.1f} ms, at {rates[1]:.0f}/s"
        f" {median_p99(at_rates['ours'], 1):.1f} ms (goal <= 50 ms); at saturation, 32 clients:"
        f" {ours_one.percentile_ms(0.99):.1f} ms; mixed: texts/s no worse than one slot"
    )
    texts_per_second = {
        name: median_run(results[name]["ours"]).texts_per_second for name in results
    }
    cost_table(texts_per_second)
