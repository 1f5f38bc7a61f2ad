"""`make bench-model`: our engine and our cold boot against named baselines, in one run.

1. Throughput on the same mixed-length texts: our Embedder (MODEL_DTYPE, default auto)
   vs SentenceTransformer.encode in float32 with batch 32, plus the worst cosine.
2. Through Cog's HTTP server, our predictor vs bench/naive_predict.py (SentenceTransformer
   in setup(), `.tolist()` output): seconds from start to READY, then one request's
   embeddings/s with the JSON output included.
3. Many small requests (bench/model_concurrency.py): 32 clients through Cog's HTTP server,
   ours vs the one-slot runner it replaced vs the naive predictor; the cost per million.
4. With a GPU: the throughput comparison there, and tokens/s and MFU at length 128.
Runs alternate between contender and baseline so drift on a noisy machine hits both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import torch

from bench import model_concurrency
from bench.corpus import mixed_texts
from embedder.engine import Embedder, load_tokenizer
from embedder.precision import dtype_from_env, resolve_dtype
from embedder.weights import package_dir
from localcog import REPO
from localcog.processes import stop_on_signals
from localcog.server import RUNNER, cog_server

PEAK_BF16_FLOPS = (
    800e12  # H100/H200 dense bf16 peak, rounded down (NVIDIA data sheets: 989.5 TFLOPS SXM)
)
BOOT_TIMEOUT = 300
NAIVE = "bench/naive_predict.py:Runner"
PARTS = ["engine", "boot", "concurrency"]


def flops_per_text(length: int) -> float:
    """Forward FLOPs of all-MiniLM-L6-v2 for one text of `length` tokens: 2 x 10.6M weights
    per token (embeddings excluded) plus attention, 2 x 2 x 6 layers x 384 x length."""
    return length * (21.23e6 + 9216 * length)


def best_of(runs: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def throughput(device: torch.device, count: int, runs: int) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(package_dir()), device=str(device))
    dtype = resolve_dtype(dtype_from_env(), device)
    ours = Embedder(REPO / "weights", device, dtype)
    texts = mixed_texts(count, ours.tokenizer)
    lengths = [len(e.ids) for e in ours.tokenizer.encode_batch(texts)]
    ours.embed(texts[:64])
    reference.encode(texts[:64], batch_size=32)

    base_s = []
    ours_s = []
    for _ in range(runs):  # alternate: drift hits both sides
        base_s.append(best_of(1, lambda: reference.encode(texts, batch_size=32)))
        ours_s.append(best_of(1, lambda: ours.embed(texts)))
    expected = reference.encode(texts, batch_size=32, convert_to_numpy=True)
    got = ours.embed(texts)
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
    worst = float(((got * expected).sum(1) / norms).min())
    base_rate = count / min(base_s)
    ours_rate = count / min(ours_s)
    print(
        f"[{device.type}] {count} texts, {min(lengths)}-{max(lengths)} tokens "
        f"(mean {statistics.mean(lengths):.0f}), best of {runs}"
    )
    dtype_name = str(dtype).removeprefix("torch.")
    print(
        f"  baseline  SentenceTransformer.encode float32, batch 32  {base_rate:7.1f} embeddings/s"
    )
    print(f"  ours      Embedder, {dtype_name:<34}  {ours_rate:7.1f} embeddings/s")
    print(
        f"  ratio     {ours_rate / base_rate:.2f}x (goal >= 2.0x), "
        f"worst cosine {worst:.6f} (gate >= 0.999)"
    )
    if device.type == "cuda":
        fixed = [" ".join(["word"] * 126)] * 4096  # 126 words + [CLS] + [SEP]: 128 tokens
        length = len(ours.tokenizer.encode(fixed[0]).ids)
        rate = len(fixed) / best_of(runs, lambda: ours.embed(fixed))
        mfu = rate * flops_per_text(length) / PEAK_BF16_FLOPS
        print(f"  length {length}: {rate * length:,.0f} tokens/s, MFU {mfu:.1%} of 800 TFLOP/s")


def serve_and_predict(runner: str, log: Path, texts: list[str]) -> tuple[float, float]:
    """Seconds from process start to READY, then seconds for one request of `texts`."""
    start = time.perf_counter()
    with cog_server(log, runner=runner, ready_timeout=BOOT_TIMEOUT) as server:
        boot = time.perf_counter() - start
        start = time.perf_counter()
        response = httpx.post(
            f"{server.url}/predictions", json={"input": {"texts": texts}}, timeout=600
        )
        request = time.perf_counter() - start
    if response.json().get("status") != "succeeded":
        raise SystemExit(f"bench: {runner} prediction failed: {response.text[:200]}")
    return boot, request


def through_cog(count: int, runs: int) -> None:
    texts = mixed_texts(count, load_tokenizer(REPO / "weights"))
    ours = []
    naive = []
    with tempfile.TemporaryDirectory(prefix="bench-boot-") as logs:
        log_dir = Path(logs)
        for i in range(runs):  # alternate: drift hits both sides
            naive.append(serve_and_predict(NAIVE, log_dir / f"naive-{i}.log", texts))
            ours.append(serve_and_predict(RUNNER, log_dir / f"ours-{i}.log", texts))
    boot_o, boot_n = (statistics.median(b for b, _ in runs_) for runs_ in (ours, naive))
    rate_o, rate_n = (count / min(r for _, r in runs_) for runs_ in (ours, naive))
    print(f"[cog] Cog HTTP server, median boot and best request of {runs}")
    print(
        f"  cold boot to READY   naive {boot_n:6.2f} s   ours {boot_o:6.2f} s   "
        f"ratio {boot_o / boot_n:.2f}x (goal <= 0.5x)"
    )
    print(
        f"  {count} texts, json   naive {rate_n:6.1f}/s   ours {rate_o:6.1f}/s   "
        f"ratio {rate_o / rate_n:.2f}x (request wall time, output included)"
    )


def main() -> None:
    stop_on_signals()  # a ^C or kill still stops the servers and removes the work folder
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=PARTS)
    parser.add_argument("--seconds", type=float, default=10, help="per load, many small requests")
    args = parser.parse_args()
    if "engine" in args.parts:
        throughput(torch.device("cpu"), args.texts, args.runs)
    if "boot" in args.parts:
        through_cog(args.texts, args.runs)
    if "concurrency" in args.parts:
        model_concurrency.run(args.seconds, rounds=3)
    if "engine" in args.parts and torch.cuda.is_available():
        throughput(torch.device("cuda"), args.texts * 10, args.runs)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("bench: stopped; the servers it started are stopped too")
