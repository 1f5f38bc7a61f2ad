"""Fixtures more than one area uses: the Cog schema, a webhook sink, a live receiver on each
database, the stand-in for Replicate. The model's own fixtures are in tests/model/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localcog import REPO
from localcog import schema as cog_schema
from localcog.loopback import serve_in_thread
from localcog.postgres import scratch_database
from receiver.app import create_app
from receiver.runtime import open_store
from receiver.settings import Settings, signing_keys
from standin.app import create_standin
from standin.memory import StandIn
from tests.support.live import LiveReceiver, LiveStandIn
from tests.support.loopback_http import WebhookSink
from tests.support.receiving import READ_TOKEN, SECRET, Clock
from tests.support.standin import STANDIN_SECRET, STANDIN_TOKEN


@pytest.fixture(scope="session")
def schema_file() -> Path:
    """Write .cog/openapi_schema.json from predict.py, so the server checks what the code says."""
    return cog_schema.write_schema(REPO)


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    s = WebhookSink()
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every receiver test runs on an SQLite file and on the machine's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'receiver.db'}"
    else:
        with scratch_database() as url:
            yield url


@pytest.fixture
def receiver_settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        replicate_webhook_secret=SECRET,
        receiver_database_url=database_url,
        receiver_api_token=READ_TOKEN,
        receiver_output_dir=tmp_path / "outputs",
        receiver_max_body_bytes=64 * 1024,
        receiver_max_files_per_prediction=100,  # the cap reached with a small body
        receiver_download_hosts=["replicate.delivery"],
    )


@pytest.fixture
def receiver(receiver_settings: Settings) -> Iterator[LiveReceiver]:
    """A live receiver (no background workers) on loopback, with its store and clock."""
    store = open_store(receiver_settings)
    clock = Clock()
    app = create_app(receiver_settings, signing_keys(receiver_settings.secrets()), store, clock)
    with serve_in_thread(app) as url:
        yield LiveReceiver(url=url, store=store, clock=clock)
    store.engine.dispose()


@pytest.fixture
def standin() -> Iterator[LiveStandIn]:
    """The local stand-in for Replicate's API, live on loopback, with its memory."""
    memory = StandIn(token=STANDIN_TOKEN, secret=STANDIN_SECRET)
    with serve_in_thread(create_standin(memory)) as url:
        memory.base_url = url
        yield LiveStandIn(url=url, memory=memory)
