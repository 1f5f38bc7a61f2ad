"""The model's fixtures: the reference pipeline, our engine in each precision, a live Cog
server running predict.py on the CPU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from embedder.engine import Embedder
from embedder.weights import package_dir
from localcog.server import CogServer, cog_server
from tests.support.embeddings import WEIGHTS


@pytest.fixture(scope="session")
def reference() -> Any:
    """sentence-transformers' own pipeline for this model, in float32 (test-only dependency)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(package_dir()), device="cpu")


@pytest.fixture(scope="session")
def reference_unnormalized(reference: Any) -> Any:
    """The same pipeline without its Normalize module: mean-pooled vectors."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(modules=[reference[0], reference[1]], device="cpu")


@pytest.fixture(scope="session")
def engine_fp32() -> Embedder:
    return Embedder(WEIGHTS, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="session")
def engine_bf16() -> Embedder:
    return Embedder(WEIGHTS, torch.device("cpu"), torch.bfloat16)


@pytest.fixture(scope="module")
def cog(tmp_path_factory: pytest.TempPathFactory, schema_file: Path) -> Iterator[CogServer]:
    log = tmp_path_factory.mktemp("cog") / "server.log"
    # On the CPU even on a GPU box: the tests' timings ("a minute of work") and precision
    # gates are the CPU's; the GPU is measured by `make bench-model`.
    with cog_server(log, env={"CUDA_VISIBLE_DEVICES": ""}) as server:
        yield server
