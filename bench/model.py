"""`make bench-model`: our engine and our cold boot against named baselines, in one run.

1. Throughput on the same mixed-length texts: our Embedder (MODEL_DTYPE, default auto)
   vs SentenceTransformer.encode in float32 with batch 32, plus the worst cosine.
2. Cold boot: seconds from starting Cog's HTTP server to READY, our predictor vs
   bench/naive_predict.py, which loads SentenceTransformer in setup().
3. With a GPU: the throughput comparison there, and tokens/s and MFU at length 128.
Runs alternate between contender and baseline so drift on a noisy machine hits both.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.corpus import mixed_texts
from embedder.engine import Embedder
from embedder.precision import dtype_from_env, resolve_dtype
from embedder.weights import package_dir
from ship.cog_server import REPO, cog_server

PEAK_BF16_FLOPS = 800e12  # the H100/H200 dense bf16 figure the issue names
BOOT_TIMEOUT = 300


def flops_per_text(length: int) -> float:
    """Forward FLOPs of all-MiniLM-L6-v2 for one text of `length` tokens (FACTS.md)."""
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

    base_s, ours_s = [], []
    for _ in range(runs):  # alternate: drift hits both sides
        base_s.append(best_of(1, lambda: reference.encode(texts, batch_size=32)))
        ours_s.append(best_of(1, lambda: ours.embed(texts)))
    expected = reference.encode(texts, batch_size=32, convert_to_numpy=True)
    got = ours.embed(texts)
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
    worst = float(((got * expected).sum(1) / norms).min())
    base_rate, ours_rate = count / min(base_s), count / min(ours_s)
    print(
        f"[{device.type}] {count} texts, {min(lengths)}-{max(lengths)} tokens "
        f"(mean {statistics.mean(lengths):.0f}), best of {runs}"
    )
    print(f"  baseline  SentenceTransformer.encode fp32 batch 32: {base_rate:8.1f} embeddings/s")
    print(
        f"  ours      Embedder {str(dtype).removeprefix('torch.'):>8}:               "
        f"{ours_rate:8.1f} embeddings/s"
    )
    print(
        f"  ratio     {ours_rate / base_rate:.2f}x   (goal >= 2.0x)   "
        f"worst cosine {worst:.6f} (gate >= 0.999)"
    )
    if device.type == "cuda":
        fixed = [" ".join(["word"] * 126)] * 4096  # 126 words + [CLS] + [SEP] = 128 tokens
        assert len(ours.tokenizer.encode(fixed[0]).ids) == 128
        seconds = best_of(runs, lambda: ours.embed(fixed))
        rate = len(fixed) / seconds
        mfu = rate * flops_per_text(128) / PEAK_BF16_FLOPS
        print(f"  length 128: {rate * 128:,.0f} tokens/s, MFU {mfu:.1%} of 800 TFLOP/s")


def boot_seconds(runner: str, log_dir: Path, index: int) -> float:
    start = time.perf_counter()
    with cog_server(log_dir / f"{index}.log", runner=runner, ready_timeout=BOOT_TIMEOUT):
        return time.perf_counter() - start


def cold_boot(runs: int) -> None:
    log_dir = Path(tempfile.mkdtemp(prefix="bench-boot-"))
    ours, naive = [], []
    for i in range(runs):
        naive.append(boot_seconds("bench/naive_predict.py:Runner", log_dir, 2 * i))
        ours.append(boot_seconds("predict.py:Runner", log_dir, 2 * i + 1))
    o, n = statistics.median(ours), statistics.median(naive)
    print(f"[boot] Cog server start to READY, median of {runs}")
    print(f"  baseline  naive predictor (SentenceTransformer in setup): {n:6.2f} s")
    print(f"  ours      predict.py:Runner:                              {o:6.2f} s")
    print(f"  ratio     {o / n:.2f}x   (goal <= 0.5x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    throughput(torch.device("cpu"), args.texts, args.runs)
    cold_boot(args.runs)
    if torch.cuda.is_available():
        throughput(torch.device("cuda"), args.texts * 10, args.runs)


if __name__ == "__main__":
    main()
