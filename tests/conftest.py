"""Shared fixtures: the reference model, our engine, a live Cog server and a webhook sink."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from embedder.engine import Embedder
from embedder.weights import package_dir
from localcog import REPO
from localcog import schema as cog_schema
from localcog.server import CogServer, cog_server
from tests.support.embeddings import WEIGHTS
from tests.support.live import LiveReceiver, LiveStandIn
from tests.support.loopback_http import WebhookSink
from tests.support.standin import STANDIN_SECRET, STANDIN_TOKEN


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


@pytest.fixture(scope="session")
def schema_file() -> Path:
    """Write .cog/openapi_schema.json from predict.py, so the server checks what the code says."""
    return cog_schema.write_schema(REPO)


@pytest.fixture(scope="module")
def cog(tmp_path_factory: pytest.TempPathFactory, schema_file: Path) -> Iterator[CogServer]:
    log = tmp_path_factory.mktemp("cog") / "server.log"
    # On the CPU even on a GPU box: the tests' timings ("a minute of work") and precision
    # gates are the CPU's; the GPU is measured by `make bench-model`.
    with cog_server(log, env={"CUDA_VISIBLE_DEVICES": ""}) as server:
        yield server


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    s = WebhookSink()
    yield s
    s.close()


# --- the receiver ------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every receiver test runs on an SQLite file and on the machine's PostgreSQL."""
    from tests.support.receiving import postgres_database

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'receiver.db'}"
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def receiver_settings(database_url: str, tmp_path: Path) -> Any:
    from receiver.settings import Settings
    from tests.support.receiving import READ_TOKEN, SECRET

    return Settings(
        replicate_webhook_secret=SECRET,
        receiver_database_url=database_url,
        receiver_api_token=READ_TOKEN,
        receiver_output_dir=tmp_path / "outputs",
        receiver_max_body_bytes=64 * 1024,
        receiver_download_hosts=["replicate.delivery"],
    )


@pytest.fixture
def receiver(receiver_settings: Any) -> Iterator[LiveReceiver]:
    """A live receiver (no background workers) on loopback, with its store and clock."""
    from localcog.loopback import serve_in_thread
    from receiver.app import create_app
    from receiver.runtime import open_store
    from receiver.settings import signing_keys
    from tests.support.receiving import Clock

    store = open_store(receiver_settings)
    clock = Clock()
    app = create_app(receiver_settings, signing_keys(receiver_settings.secrets()), store, clock)
    with serve_in_thread(app) as url:
        yield LiveReceiver(url=url, store=store, clock=clock)
    store.engine.dispose()


@pytest.fixture
def standin() -> Iterator[LiveStandIn]:
    """The local stand-in for Replicate's API, live on loopback, with its memory."""
    from localcog.loopback import serve_in_thread
    from standin.app import create_standin
    from standin.memory import StandIn

    memory = StandIn(token=STANDIN_TOKEN, secret=STANDIN_SECRET)
    with serve_in_thread(create_standin(memory)) as url:
        memory.base_url = url
        yield LiveStandIn(url=url, memory=memory)
