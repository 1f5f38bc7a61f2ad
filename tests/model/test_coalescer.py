"""Concurrent predictions sharing forward passes: the right vectors to the right caller, fairly,
and a cancel that touches no one else. The engine is the real one, on the CPU."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import numpy as np

from embedder.coalescer import Coalescer, Request
from embedder.engine import Embedder
from tests.support.embeddings import VARIED_TEXTS, cosines

LONG = "word " * 300  # truncated at 256 tokens: the longest text there is


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


def test_concurrent_callers_get_exactly_their_own_vectors(engine_fp32: Embedder) -> None:
    calls = [
        (VARIED_TEXTS, True),
        (["one short query"], True),
        ([f"{i} {LONG}" for i in range(40)], False),
        (VARIED_TEXTS[::-1], False),
        (["another query", "and a second"], True),
    ]

    async def together() -> list[np.ndarray]:
        coalescer = Coalescer(engine_fp32, max_wait=0.001)
        return await asyncio.gather(*(coalescer.embed(t, n) for t, n in calls))

    results = run(together())
    for (texts, normalize), got in zip(calls, results, strict=True):
        alone = engine_fp32.embed(texts, normalize=normalize)
        assert got.shape == (len(texts), 384)
        assert cosines(got, alone).min() >= 0.9999
        np.testing.assert_allclose(
            np.linalg.norm(got, axis=1), np.linalg.norm(alone, axis=1), rtol=1e-4
        )


def test_passes_are_shared(engine_fp32: Embedder) -> None:
    """Thirty-two one-text callers at once need far fewer than thirty-two passes."""

    async def together() -> Coalescer:
        coalescer = Coalescer(engine_fp32, max_wait=0.001)
        await asyncio.gather(*(coalescer.embed([f"query {i}"], True) for i in range(32)))
        return coalescer

    coalescer = run(together())
    assert coalescer.texts == 32
    assert coalescer.passes <= 2


async def queued(coalescer: Coalescer, token_counts: list[int], normalize: bool = True) -> Request:
    """A request of texts with the given token counts, put in the queue without running."""
    request = Request.of([[101] + [1000] * (n - 2) + [102] for n in token_counts], normalize)
    coalescer.put(request)
    return request


def test_a_big_request_does_not_starve_one_text_queries(engine_fp32: Embedder) -> None:
    async def steps() -> tuple[list[Any], Request, list[Request], int]:
        coalescer = Coalescer(engine_fp32, max_wait=0)
        big = await queued(coalescer, [256] * 1024)
        small = [await queued(coalescer, [12]) for _ in range(20)]
        return coalescer.take(), big, small, coalescer.token_budget

    step, big, small, budget = run(steps())
    taken = [piece.request for piece in step]
    assert all(request in taken for request in small)  # every query in the very next step
    assert taken.count(big) >= 1
    assert taken.count(big) * 256 + len(small) * 12 <= budget


def test_one_text_queries_do_not_starve_a_big_request(engine_fp32: Embedder) -> None:
    async def steps() -> tuple[list[list[Any]], Request]:
        coalescer = Coalescer(engine_fp32, max_wait=0)
        big = await queued(coalescer, [40] * 100)
        taken = []
        for _ in range(5):  # a stream of queries, more than a step holds, every step
            for _ in range(coalescer.max_texts + 10):
                await queued(coalescer, [12])
            taken.append([piece.request for piece in coalescer.take()])
        return taken, big

    taken, big = run(steps())
    assert all(step.count(big) >= 1 for step in taken)
    assert len(big.queued) == 100 - sum(step.count(big) for step in taken)


def test_a_cancelled_caller_leaves_the_queue_and_no_one_else_is_touched(
    engine_fp32: Embedder,
) -> None:
    first_texts = [f"{i} {LONG}" for i in range(8)]  # one full pass: a quarter of a second

    async def scenario() -> tuple[np.ndarray, int, int, bool]:
        coalescer = Coalescer(engine_fp32, max_wait=0)
        first = asyncio.create_task(coalescer.embed(first_texts, True))
        while coalescer.running_texts() < 8:
            await asyncio.sleep(0.001)
        # Queued behind that pass (16 texts are tokenized inline: queued on their first step).
        doomed = asyncio.create_task(coalescer.embed([f"{i} {LONG}" for i in range(16)], True))
        after = asyncio.create_task(coalescer.embed(["after the cancel"], True))
        await asyncio.sleep(0)
        before_cancel = coalescer.queued_texts()
        doomed.cancel()
        await asyncio.sleep(0)
        after_cancel = coalescer.queued_texts()
        assert coalescer.running_texts() == 8  # all of it happened while the first pass ran
        vectors = await first
        await after
        return vectors, before_cancel, after_cancel, doomed.cancelled()

    vectors, before_cancel, after_cancel, cancelled = run(scenario())
    assert cancelled
    assert before_cancel == 17
    assert after_cancel == 1  # the doomed caller's 16 texts left the queue at once
    alone = engine_fp32.embed(first_texts)
    assert cosines(vectors, alone).min() >= 0.9999


def test_a_caller_cancelled_while_its_pass_runs_gets_nothing_and_others_their_vectors(
    engine_fp32: Embedder,
) -> None:
    async def scenario() -> tuple[np.ndarray, bool]:
        coalescer = Coalescer(engine_fp32, max_wait=0.05)  # both join the same pass
        doomed = asyncio.create_task(coalescer.embed(["cancelled mid-pass"], True))
        kept = asyncio.create_task(coalescer.embed(["kept"], True))
        while coalescer.running_texts() < 2:
            await asyncio.sleep(0.001)
        doomed.cancel()
        vectors = await kept
        await asyncio.gather(doomed, return_exceptions=True)
        return vectors, doomed.cancelled()

    vectors, cancelled = run(scenario())
    assert cancelled
    assert cosines(vectors, engine_fp32.embed(["kept"])).min() >= 0.9999
