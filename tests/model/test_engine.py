"""The engine against sentence-transformers, the definition of correct for this model."""

from __future__ import annotations

import concurrent.futures
import random
from typing import Any

import numpy as np
import pytest
import torch

from embedder.engine import ALL_THREADS, DIMENSIONS, MAX_TOKENS, BatchPlan, Embedder, op_error
from tests.support.embeddings import VARIED_TEXTS, WEIGHTS, cosines


@pytest.fixture(scope="module")
def expected(reference: Any) -> np.ndarray:
    return reference.encode(VARIED_TEXTS, batch_size=32, convert_to_numpy=True)


@pytest.fixture(scope="module")
def expected_raw(reference_unnormalized: Any) -> np.ndarray:
    return reference_unnormalized.encode(VARIED_TEXTS, batch_size=32, convert_to_numpy=True)


def test_truncates_at_256_tokens_like_sentence_transformers(
    engine_fp32: Embedder, reference: Any
) -> None:
    long_text = VARIED_TEXTS[1]
    ours = engine_fp32.tokenizer.encode(long_text).ids
    theirs = reference.preprocess([long_text])["input_ids"][0].tolist()
    assert len(ours) == MAX_TOKENS
    assert ours == theirs


def test_float32_matches_reference(engine_fp32: Embedder, expected: np.ndarray) -> None:
    ours = engine_fp32.embed(VARIED_TEXTS, normalize=True)
    assert ours.shape == (len(VARIED_TEXTS), DIMENSIONS)
    assert ours.dtype == np.float32
    assert cosines(ours, expected).min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_unnormalized_is_the_mean_pooled_vector(
    engine_fp32: Embedder, expected_raw: np.ndarray
) -> None:
    ours = engine_fp32.embed(VARIED_TEXTS, normalize=False)
    assert cosines(ours, expected_raw).min() >= 0.99999
    # Same length as the reference too: nothing was normalised.
    np.testing.assert_allclose(
        np.linalg.norm(ours, axis=1), np.linalg.norm(expected_raw, axis=1), rtol=1e-4
    )
    assert np.linalg.norm(ours, axis=1).min() > 1.5


def test_bfloat16_within_gate(engine_bf16: Embedder, expected: np.ndarray) -> None:
    ours = engine_bf16.embed(VARIED_TEXTS, normalize=True)
    assert ours.dtype == np.float32  # pooling and normalisation stay in float32
    assert cosines(ours, expected).min() >= 0.999


def test_float16_within_gate(expected: np.ndarray) -> None:
    # fp16 is the CUDA default; on a CPU it is slow, so check a few texts only.
    engine = Embedder(WEIGHTS, torch.device("cpu"), torch.float16)
    ours = engine.embed(VARIED_TEXTS[:4], normalize=True)
    assert cosines(ours, expected[:4]).min() >= 0.999


def test_order_preserved_across_length_sorted_batches(
    engine_fp32: Embedder, reference: Any
) -> None:
    rng = random.Random(7)
    words = " ".join(VARIED_TEXTS[1].split()[:120]).split()
    texts = [" ".join(words[: rng.randint(1, 120)]) for _ in range(150)]
    ours = engine_fp32.embed(texts)
    theirs = reference.encode(texts, batch_size=32, convert_to_numpy=True)
    # Row by row: a single swapped pair of similar texts would drop below this.
    assert cosines(ours, theirs).min() >= 0.99999
    assert len({len(engine_fp32.tokenizer.encode(t).ids) for t in texts}) > 50


def test_batches_cover_every_text_once_within_budget() -> None:
    plan = BatchPlan(token_budget=100, max_texts=8)
    lengths = [random.Random(i).randint(2, 256) for i in range(300)]
    batches = list(plan.batches(lengths))
    assert sorted(i for b in batches for i in b) == list(range(300))
    for batch in batches:
        padded = len(batch) * max(lengths[i] for i in batch)
        assert len(batch) <= 8
        assert padded <= 100 or len(batch) == 1
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)


def test_identical_texts_give_identical_vectors(engine_bf16: Embedder) -> None:
    out = engine_bf16.embed(["same text", "other", "same text"])
    np.testing.assert_allclose(out[0], out[2], atol=1e-6)
    assert not np.allclose(out[0], out[1])


@pytest.mark.parametrize("engine_name", ["engine_fp32", "engine_bf16"])
def test_the_traced_encoder_matches_the_eager_one_at_other_shapes(
    engine_name: str, request: pytest.FixtureRequest
) -> None:
    """The CPU encoder is traced from one small batch: batch size and length must stay
    inputs, not constants of the trace."""
    engine: Embedder = request.getfixturevalue(engine_name)
    assert isinstance(engine.encoder, torch.jit.ScriptFunction)
    words = VARIED_TEXTS[1].split()
    batches = [
        [""],  # [CLS] [SEP] alone
        ["word " * 300],  # truncated at 256 tokens
        [" ".join(words[:n]) for n in range(1, 40, 3)],  # 13 texts of different lengths
    ]
    for texts in batches:
        inputs = engine._inputs(engine.tokenize(texts))
        with torch.inference_mode():
            for _ in range(3):  # TorchScript may re-plan a graph after its first runs
                traced = engine.encoder(*inputs)
                eager = engine.model(*inputs)
                assert traced.shape == eager.shape == (len(texts), inputs[0].shape[1], DIMENSIONS)
                torch.testing.assert_close(traced, eager, rtol=1e-5, atol=1e-5)


def test_a_call_smaller_than_a_pass_leaves_a_core_to_the_server(engine_fp32: Embedder) -> None:
    """Checked in the thread that runs the passes, as the coalescer's worker does. On a
    machine where torch uses one thread, both calls use it."""

    def threads_after(texts: list[str]) -> int:
        engine_fp32.embed(texts)
        return torch.get_num_threads()

    with concurrent.futures.ThreadPoolExecutor(1) as forward:
        assert forward.submit(threads_after, ["one query"]).result() == max(1, ALL_THREADS - 1)
        more_than_a_pass = ["word " * 300] * 9  # 9 x 256 tokens
        assert forward.submit(threads_after, more_than_a_pass).result() == ALL_THREADS


def test_a_failing_op_is_told_in_its_own_line_out_of_torchscripts_report() -> None:
    report = (
        "The following operation failed in the TorchScript interpreter.\n"
        "Traceback of TorchScript (most recent call last):\n"
        "/site-packages/torch/nn/functional.py(2615): embedding\n"
        "/work/embedder/bert.py(108): __call__\n"
        "RuntimeError: index out of range in self\n"
        "Exception raised from operator() at aten/src/ATen/native/Embedding.cpp:1:\n"
        "#35 _start from ??:0\n"
    )
    assert str(op_error(RuntimeError(report))) == "index out of range in self"
    assert str(op_error(RuntimeError("no error line"))) == "no error line"
