"""Jobs fixtures: a receiver app that runs jobs on a deployment of the stand-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcog.loopback import serve_in_thread
from receiver.app import create_app
from receiver.jobs.rate import SharedRateLimit
from receiver.jobs.runner import JobRunner
from receiver.replicate_api import Replicate
from receiver.routes import WEBHOOK_PATH
from receiver.runtime import open_store
from receiver.settings import Settings, signing_keys
from standin.api_deployments import release
from standin.app import create_standin
from standin.local import MODEL
from standin.memory import StandIn
from tests.support.jobs import JobRig
from tests.support.receiving import READ_TOKEN, SECRET, Clock
from tests.support.standin import STANDIN_SECRET, STANDIN_TOKEN

DEPLOYMENT = "local/jobs"
PUBLIC_URL = "https://receiver.example.com"
RATE_PER_MINUTE = 70  # a burst of 10, then one a second


def deployed(memory: StandIn, schema_file: Path) -> None:
    version = memory.add_version(MODEL, json.loads(schema_file.read_text()))
    config = {"hardware": "cpu", "min_instances": 0, "max_instances": 1}
    memory.deployments[DEPLOYMENT] = {
        "owner": "local",
        "name": "jobs",
        "current_release": release(memory, 1, MODEL, version, config),
    }


@pytest.fixture
def rig(database_url: str, tmp_path: Path, schema_file: Path) -> Iterator[JobRig]:
    clock = Clock()  # the receiver's, the runner's and Replicate's
    memory = StandIn(token=STANDIN_TOKEN, secret=STANDIN_SECRET, retry_delays=(), clock=clock)
    with serve_in_thread(create_standin(memory)) as standin_url:
        memory.base_url = standin_url
        deployed(memory, schema_file)
        settings = Settings(
            replicate_webhook_secret=SECRET,
            replicate_api_token=STANDIN_TOKEN,
            replicate_base_url=standin_url,
            receiver_database_url=database_url,
            receiver_api_token=READ_TOKEN,
            receiver_output_dir=tmp_path / "outputs",
            receiver_public_url=PUBLIC_URL,
            receiver_download_hosts=[standin_url],
            receiver_max_job_bytes=64 * 1024,
        )
        store = open_store(settings)
        runner = JobRunner(
            store,
            Replicate(settings),
            webhook_url=PUBLIC_URL + WEBHOOK_PATH,
            limit=SharedRateLimit(store.engine, "predictions.create", RATE_PER_MINUTE),
            max_attempts=3,
            clock=clock,
        )
        app = create_app(settings, signing_keys(settings.secrets()), store, clock)
        with serve_in_thread(app) as url:
            yield JobRig(url, store, clock, runner, memory, DEPLOYMENT, settings)
        store.engine.dispose()
