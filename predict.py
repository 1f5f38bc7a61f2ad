"""Cog runner: sentence embeddings from all-MiniLM-L6-v2.

The heavy lifting is in `embedder/`; this file is the contract Replicate sees:
input names, limits, output shapes, and the errors a caller gets.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
from pathlib import Path as FsPath
from typing import Any

import numpy as np
import torch
from cog import BaseRunner, Input, Path, concurrent

from embedder.coalescer import Coalescer
from embedder.engine import Embedder
from embedder.precision import dtype_from_env, resolve_dtype
from embedder.weights import verify

MAX_TEXTS = 1024
# UTF-8 bytes over all texts: room for MAX_TEXTS full-length English texts (~1.3 KB at
# 256 tokens) while bounding tokenizer work, which runs before truncation.
MAX_TOTAL_BYTES = 2 << 20
# Predictions in flight at once: the literal in @concurrent below must equal it (cog build
# reads only a literal there and writes it into the image as COG_MAX_CONCURRENCY; that
# variable, set at run time, overrides both). 64: every in-flight one-text query fits one CPU
# pass (64 texts), so passes stay full under a search box's traffic, and the worst case in
# memory (64 inputs of 2 MiB, with their outputs) stays under 1 GB.
MAX_CONCURRENCY = 64
# How long the coalescer, woken from idle by a request, waits for company before a step that
# is not full. On this CPU a one-text pass costs 3-7 ms, so 1 ms to take everything that
# arrives meanwhile is a small price; on a GPU, where a pass of 64 texts costs little more than
# one, unmeasured. While a step runs, the next one fills by itself.
MAX_WAIT_SECONDS = 0.001
# Engine passes' worth of texts in one coalescer step. Four on the CPU let the texts of many
# predictions be sorted by length together: one pass's worth from 32 predictions of mixed sizes
# ran at 0.82-0.90x the rate of the same requests one after another, four at 0.95-1.03x (in
# process, 4 680 texts, twice each). The price: a query that arrives during a step of long
# texts waits for all four passes. A GPU pass (65 536 tokens) is a large sort already.
STEP_PASSES = {"cpu": 4, "cuda": 1}


def slots() -> int:
    """This server's concurrency: COG_MAX_CONCURRENCY, as coglet reads it. coglet ignores the
    decorator at run time; `cog build` writes its value into the image's environment."""
    return int(os.environ.get("COG_MAX_CONCURRENCY", MAX_CONCURRENCY))


WEIGHTS_DIR = FsPath(os.environ.get("WEIGHTS_DIR", FsPath(__file__).parent / "weights"))


class InvalidInputError(ValueError):
    """A request the schema cannot refuse (count, total size): the prediction fails with it.

    coglet reports a failed prediction as "Prediction failed: <how it failed>: <the
    exception's __qualname__>: <message>"; a readable qualname turns the tail into the
    sentence a Replicate user reads: "Invalid input: texts must hold 1 to 1024 strings; got 0".
    """

    __qualname__ = "Invalid input"


def check_texts(texts: Any) -> list[str]:
    """Refuse what the schema cannot express (count, total size), saying what to change."""
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise InvalidInputError("texts must be a list of strings")
    if not 1 <= len(texts) <= MAX_TEXTS:
        raise InvalidInputError(f"texts must hold 1 to {MAX_TEXTS} strings; got {len(texts)}")
    size = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    if size > MAX_TOTAL_BYTES:
        raise InvalidInputError(f"texts total {size} UTF-8 bytes; the limit is {MAX_TOTAL_BYTES}")
    return texts


class Runner(BaseRunner):
    def setup(self) -> None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = resolve_dtype(dtype_from_env(), device)  # a bad MODEL_DTYPE: one line, first
        verify(WEIGHTS_DIR)  # one clear line on missing or corrupt weights, before any loading
        self.embedder = Embedder(WEIGHTS_DIR, device, dtype)
        passes = STEP_PASSES[device.type]
        self.coalescer = Coalescer(
            self.embedder,
            token_budget=passes * self.embedder.plan.token_budget,
            max_texts=passes * self.embedder.plan.max_texts,
            max_wait=MAX_WAIT_SECONDS,
        )
        self.coalescer.warm_up()
        self.keep_outputs = 2 * slots()
        # Made now, not on the first npy request: save_npy runs in threads, several at once.
        self.outputs = FsPath(tempfile.mkdtemp(prefix="embeddings-"))
        self.output_ids = itertools.count()
        print(f"embedder ready on {device} in {dtype}")

    # async: coglet runs every prediction's run() on one event loop, where the coalescer puts
    # them into shared forward passes (and refuses more than one slot for a sync run()).
    @concurrent(max=64)  # type: ignore[untyped-decorator]  # cog 0.23.1's overloads lack types
    async def run(
        self,
        texts: list[str] = Input(
            description="1 to 1024 texts, 2 MiB of UTF-8 in all; each is truncated at 256 tokens.",
        ),
        normalize: bool = Input(
            default=True, description="L2-normalise each vector (cosine similarity = dot product)."
        ),
        output_format: str = Input(
            default="json",
            choices=["json", "npy"],
            description="json: a list of 384-float lists. npy: a float32 [n, 384] .npy file.",
        ),
    ) -> Any:
        texts = check_texts(texts)
        # Also the sign that run() has begun: coglet 0.23 loses or misreports a cancel that
        # lands while it is still preparing the input (README, "Known limits").
        print(f"embedding {len(texts)} texts")
        # A cancel (or the client going away) lands in this await: the texts still queued
        # leave the queue, and vectors from a pass already running are dropped.
        vectors = await self.coalescer.embed(texts, normalize)
        if output_format == "npy":  # written off the event loop: up to 1.5 MB
            return Path(await asyncio.to_thread(self.save_npy, vectors))
        # coglet writes an ndarray as the same JSON nested list, 4x faster than walking
        # the Python floats of `.tolist()` (1.8 s vs 7.4 s for 1000 x 384, measured here).
        return vectors

    def save_npy(self, vectors: np.ndarray) -> FsPath:
        """Write `<n>/embeddings.npy`, one folder per prediction (the name Replicate's URL
        shows), and drop the file of the prediction 2 x slots() before. coglet reads each file
        into memory as soon as run() has returned it (orchestrator.rs, FileOutput), so a file
        is lost only if its read waits while twice the server's slots of later predictions
        return theirs; nothing bounds that wait, but it is one channel read."""
        n = next(self.output_ids)
        shutil.rmtree(self.outputs / str(n - self.keep_outputs), ignore_errors=True)
        path = self.outputs / str(n) / "embeddings.npy"
        path.parent.mkdir()
        np.save(path, vectors)
        return path
