"""Shared fixtures: the reference model, our engine, a live Cog server and a webhook sink."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from embedder.engine import Embedder
from embedder.weights import package_dir
from localcog import REPO
from localcog import schema as cog_schema
from localcog.server import CogServer, cog_server

WEIGHTS = REPO / "weights"

# Texts that stress the tokenizer and the pooling: long, unicode, CJK, emoji, code, empty.
VARIED_TEXTS = [
    "A man is playing a guitar.",
    "The new movie is awesome, the acting was great and the plot kept me guessing. " * 20,
    "Ça va? Über naïve café, jalapeño, Øresund, ß.",
    "我喜欢自然语言处理。東京は日本の首都です。한국어 문장도 있습니다.",
    "Привет, как дела? مرحبا بالعالم नमस्ते दुनिया",
    "I love pizza 🍕🔥😂 and 👩‍👩‍👧‍👦 families",
    'def square(x: int) -> int:\n    return x ** 2  # {"key": [1, 2, 3]}',
    "",
    "   \n\t  ",
    "[PAD] [CLS] [SEP] [MASK] [UNK]",
    "https://example.com/path?q=1&r=2 — 3.14159, 1e-9, $100",
    "x",
]


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


class WebhookSink:
    """A real HTTP server on loopback that records every POST: its JSON body, headers and time.

    `statuses` are answered in order, one per request, then 200."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.requests: list[tuple[float, dict[str, str], dict[str, Any]]] = []
        self.statuses: list[int] = []
        self._changed = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                with sink._changed:
                    status = sink.statuses.pop(0) if sink.statuses else 200
                self.send_response(status)
                if status in (301, 302, 307, 308):
                    self.send_header("Location", sink.url + "/elsewhere")
                self.end_headers()
                # Recorded before the handler returns and closes the connection: a sender that
                # waits for the end of the answer sees its events recorded in order.
                with sink._changed:
                    sink.requests.append((time.monotonic(), dict(self.headers), body))
                    if status == 200:
                        sink.events.append(body)
                    sink._changed.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/webhook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait_requests(self, count: int, timeout: float = 30) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{len(self.requests)} requests in {timeout} s, not {count}")

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 120
    ) -> dict[str, Any]:
        """Block until an event matching `predicate` has arrived; return it."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((e for e in self.events if predicate(e)), None), timeout
            )
        if not found:
            raise AssertionError(f"no matching webhook in {timeout} s; got {self.events}")
        return found

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    s = WebhookSink()
    yield s
    s.close()


# --- the receiver ------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every receiver test runs on an SQLite file and on the machine's PostgreSQL."""
    from tests.receiving import postgres_database

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'receiver.db'}"
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def receiver_settings(database_url: str, tmp_path: Path) -> Any:
    from receiver.settings import Settings
    from tests.receiving import READ_TOKEN, SECRET

    return Settings(
        replicate_webhook_secret=SECRET,
        receiver_database_url=database_url,
        receiver_api_token=READ_TOKEN,
        receiver_output_dir=tmp_path / "outputs",
        receiver_max_body_bytes=64 * 1024,
        receiver_download_hosts=["replicate.delivery"],
    )


@pytest.fixture
def receiver(receiver_settings: Any) -> Iterator[Any]:
    """A live receiver (no background workers) on loopback: yields (url, store, clock)."""
    from receiver.app import create_app
    from receiver.runtime import open_store
    from receiver.settings import signing_keys
    from standin.local import serve_in_thread
    from tests.receiving import Clock

    store = open_store(receiver_settings)
    clock = Clock()
    app = create_app(receiver_settings, signing_keys(receiver_settings.secrets()), store, clock)
    with serve_in_thread(app) as url:
        yield url, store, clock
    store.engine.dispose()


STANDIN_TOKEN = "r8_test_token"
STANDIN_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"


@pytest.fixture
def standin() -> Iterator[Any]:
    """The local stand-in for Replicate's API, live on loopback: yields (url, StandIn)."""
    from standin.app import create_standin
    from standin.local import serve_in_thread
    from standin.memory import StandIn

    state = StandIn(token=STANDIN_TOKEN, secret=STANDIN_SECRET)
    with serve_in_thread(create_standin(state)) as url:
        state.base_url = url
        yield url, state
