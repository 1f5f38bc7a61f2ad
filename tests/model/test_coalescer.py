"""Concurrent predictions sharing steps: the right vectors to the right caller, fairly, and a
cancel or a failure that touches no one else. The engine is the real one, on the CPU."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pytest

from embedder.coalescer import Coalescer, Request
from embedder.engine import Embedder
from tests.support.embeddings import VARIED_TEXTS, assert_same_rows, cosines

LONG = "word " * 300  # truncated at 256 tokens: the longest text there is
STEP_TOKENS = 4 * 2048  # what predict.py gives a CPU step
STEP_TEXTS = 4 * 64


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


def coalescer_for(engine: Embedder, max_wait: float = 0.001) -> Coalescer:
    return Coalescer(engine, token_budget=STEP_TOKENS, max_texts=STEP_TEXTS, max_wait=max_wait)


def test_concurrent_callers_get_exactly_their_own_vectors(engine_fp32: Embedder) -> None:
    calls = [
        (VARIED_TEXTS, True),
        (["one short query"], True),
        (
            [
                f"text {i}: {' '.join(['alpha', 'beta', 'gamma'][: i % 3 + 1] * i)}"
                for i in range(40)
            ],
            False,
        ),
        (VARIED_TEXTS[::-1], False),
        (["another query", "and a second"], True),
    ]

    async def together() -> list[np.ndarray]:
        coalescer = coalescer_for(engine_fp32)
        return await asyncio.gather(*(coalescer.embed(t, n) for t, n in calls))

    results = run(together())
    for (texts, normalize), got in zip(calls, results, strict=True):
        alone = engine_fp32.embed(texts, normalize=normalize)
        assert_same_rows(got, alone)
        np.testing.assert_allclose(
            np.linalg.norm(got, axis=1), np.linalg.norm(alone, axis=1), rtol=1e-4
        )


def test_steps_are_shared(engine_fp32: Embedder) -> None:
    """Thirty-two one-text callers at once need far fewer than thirty-two steps."""

    async def together() -> Coalescer:
        coalescer = coalescer_for(engine_fp32)
        await asyncio.gather(*(coalescer.embed([f"query {i}"], True) for i in range(32)))
        return coalescer

    coalescer = run(together())
    assert coalescer.texts == 32
    assert coalescer.steps <= 2


async def queued(coalescer: Coalescer, token_counts: list[int], normalize: bool = True) -> Request:
    """A request of texts with the given token counts, put in the queue without running."""
    request = Request.of([[101] + [1000] * (n - 2) + [102] for n in token_counts], normalize)
    coalescer.put(request)
    return request


def test_a_query_joins_the_next_step_however_many_long_requests_wait(
    engine_fp32: Embedder,
) -> None:
    async def step() -> tuple[list[Request], Request]:
        coalescer = coalescer_for(engine_fp32)
        for _ in range(40):  # their first texts alone are more than a step holds
            await queued(coalescer, [256] * 1024)
        query = await queued(coalescer, [12])
        return [row.request for row in coalescer.take()], query

    taken, query = run(step())
    assert query in taken


def test_a_big_request_moves_in_every_step_however_many_queries_come(
    engine_fp32: Embedder,
) -> None:
    async def steps() -> tuple[list[list[Request]], Request]:
        coalescer = coalescer_for(engine_fp32)
        big = await queued(coalescer, [40] * 1000)
        taken = []
        for _ in range(5):  # a stream of queries, more than a step holds, every step
            for _ in range(STEP_TEXTS + 10):
                await queued(coalescer, [12])
            taken.append([row.request for row in coalescer.take()])
        return taken, big

    taken, big = run(steps())
    assert all(step.count(big) >= 1 for step in taken)
    assert len(big.queued) == 1000 - sum(step.count(big) for step in taken)


def test_the_room_left_goes_to_the_oldest_request(engine_fp32: Embedder) -> None:
    async def step() -> tuple[list[Request], Request, Request]:
        coalescer = coalescer_for(engine_fp32)
        older = await queued(coalescer, [100] * 500)
        newer = await queued(coalescer, [100] * 500)
        return [row.request for row in coalescer.take()], older, newer

    taken, older, newer = run(step())
    assert taken.count(newer) == 1  # its turn in the first round, no more
    assert taken.count(older) == STEP_TOKENS // 100 - 1


def test_a_cancelled_caller_leaves_the_queue_and_no_one_else_is_touched(
    engine_fp32: Embedder,
) -> None:
    first_texts = [f"{i} {LONG}" for i in range(32)]  # one full step: about a second

    async def scenario() -> tuple[np.ndarray, int, int, bool]:
        coalescer = coalescer_for(engine_fp32, max_wait=0)
        first = asyncio.create_task(coalescer.embed(first_texts, True))
        while coalescer.running_texts() < 32:
            await asyncio.sleep(0.001)
        doomed = asyncio.create_task(coalescer.embed([f"{i} {LONG}" for i in range(16)], True))
        after = asyncio.create_task(coalescer.embed(["after the cancel"], True))
        while coalescer.queued_texts() < 17:  # both queued behind the running step
            await asyncio.sleep(0.001)
        before_cancel = coalescer.queued_texts()
        doomed.cancel()
        await asyncio.sleep(0)
        after_cancel = coalescer.queued_texts()
        assert coalescer.running_texts() == 32  # all of it happened while the first step ran
        vectors = await first
        await after
        return vectors, before_cancel, after_cancel, doomed.cancelled()

    vectors, before_cancel, after_cancel, cancelled = run(scenario())
    assert cancelled
    assert before_cancel == 17
    assert after_cancel == 1  # the doomed caller's 16 texts left the queue at once
    assert_same_rows(vectors, engine_fp32.embed(first_texts))


def test_a_caller_cancelled_while_its_step_runs_gets_nothing_and_others_their_vectors(
    engine_fp32: Embedder,
) -> None:
    async def scenario() -> tuple[np.ndarray, bool]:
        coalescer = coalescer_for(engine_fp32, max_wait=0.05)  # both join the same step
        doomed = asyncio.create_task(coalescer.embed(["cancelled mid-step"], True))
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


def test_a_failed_step_fails_its_callers_and_the_next_step_runs(engine_fp32: Embedder) -> None:
    async def scenario() -> tuple[list[BaseException | np.ndarray], np.ndarray]:
        coalescer = coalescer_for(engine_fp32, max_wait=0)
        impossible = await queued(coalescer, [3])
        impossible.token_ids[0][1] = 10**9  # no such token: the embedding lookup raises
        same_step = asyncio.create_task(coalescer.embed(["in the same step"], True))
        outcomes = await asyncio.gather(impossible.done, same_step, return_exceptions=True)
        return outcomes, await coalescer.embed(["after the failure"], True)

    outcomes, vectors = run(scenario())
    # The op's own error in one line, not TorchScript's traceback of the traced encoder.
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)
    assert [str(outcome) for outcome in outcomes] == ["index out of range in self"] * 2
    assert cosines(vectors, engine_fp32.embed(["after the failure"])).min() >= 0.9999


def test_a_second_event_loop_is_refused_in_one_line(engine_fp32: Embedder) -> None:
    coalescer = coalescer_for(engine_fp32)
    run(coalescer.embed(["first loop"], True))
    with pytest.raises(RuntimeError, match="event loop it was first used on"):
        run(coalescer.embed(["second loop"], True))
