"""The whole loop, offline: deploy and smoke through the real client, the stand-in running
predictions on the real Cog server, webhooks into a real receiver process."""

from __future__ import annotations

import hashlib
import io
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest
from replicate.client import Client

from localcog.loopback import free_port
from localcog.polling import PollTimeoutError, poll
from standin.local import MODEL, ReceiverProcess, local_replicate, receiver_process
from standin.memory import StandIn
from tests.support.commands import CLEAN_ENV, run_make, run_module
from tests.support.openapi_contract import validate
from tests.support.receiving import READ_TOKEN
from tests.support.standin import STANDIN_SECRET, STANDIN_TOKEN, standin_env

T = TypeVar("T")

RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)  # Replicate's schedule, compressed from a minute to 7.5 s


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, schema_file: Path) -> Iterator[StandIn]:
    logs = tmp_path_factory.mktemp("local")
    with local_replicate(logs, STANDIN_TOKEN, STANDIN_SECRET, RETRY_DELAYS) as standin:
        yield standin


@pytest.fixture(autouse=True)
def released(local: StandIn) -> Iterator[None]:
    """A test that holds completions and fails must not leave them held for the next one."""
    yield
    if local.hold_completions or local.held:
        local.release_completions()


def script(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_module(f"ship.{name}", env=env)


StartCollector = Callable[..., ReceiverProcess]


@pytest.fixture
def collector(local: StandIn, tmp_path: Path) -> Iterator[StartCollector]:
    """Start receiver processes on one SQLite store, configured for the stand-in."""
    env = {
        **CLEAN_ENV,
        **standin_env(local.base_url),  # the secret is fetched from the stand-in at start
        "RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'receiver.db'}",
        "RECEIVER_API_TOKEN": READ_TOKEN,
        "RECEIVER_OUTPUT_DIR": str(tmp_path / "outputs"),
        "RECEIVER_DOWNLOAD_HOSTS": local.base_url,
        "RECEIVER_WORKER_POLL_SECONDS": "0.1",
        "RECEIVER_RECONCILE_AFTER_SECONDS": "0.5",
        "RECEIVER_RECONCILE_INTERVAL_SECONDS": "0.2",
    }
    with ExitStack() as stack:

        def start(port: int | None = None) -> ReceiverProcess:
            log = tmp_path / "receiver.log"
            return stack.enter_context(receiver_process(env, log, port))

        yield start


def eventually(check: Callable[[], T | None], timeout: float = 60) -> T:
    """Poll `check` (another process holds the state) until it returns something."""
    try:
        return poll(check, timeout, 0.05, "condition reached")
    except PollTimeoutError:
        raise AssertionError("condition not reached in time") from None


def state_with_status(
    url: str, prediction_id: str, status: str = "succeeded"
) -> dict[str, Any] | None:
    """The receiver's state of the prediction once it has `status`; None before."""
    response = httpx.get(
        f"{url}/predictions/{prediction_id}", headers={"authorization": f"Bearer {READ_TOKEN}"}
    )
    if response.status_code == 404:
        return None
    state: dict[str, Any] = response.json()
    return state if state["status"] == status else None


def deployed(standin: StandIn, name: str) -> str:
    """Deploy MODEL as `local/<name>` through the deploy script; return its owner/name."""
    deployment = f"local/{name}"
    env = {
        **standin_env(standin.base_url),
        "MODEL": MODEL,
        "DEPLOYMENT": deployment,
        "HARDWARE": "cpu",
    }
    result = script("deploy", env)
    assert result.returncode == 0, result.stderr
    return deployment


def predict(standin: StandIn, deployment: str, webhook: str, **input: Any) -> str:
    api = Client(api_token=STANDIN_TOKEN, base_url=standin.base_url)
    prediction = api.deployments.predictions.create(
        deployment, input={"texts": ["one", "two"], **input}, webhook=webhook
    )
    return str(prediction.id)


def test_deploy_creates_then_updates_and_never_duplicates(local: StandIn) -> None:
    env = {
        **standin_env(local.base_url),
        "MODEL": MODEL,
        "DEPLOYMENT": "local/twice",
        "HARDWARE": "cpu",
    }
    first = script("deploy", env)
    again = script("deploy", env)
    bigger = script("deploy", {**env, "MAX_INSTANCES": "3"})
    assert first.stdout.startswith("deployment local/twice created: release 1, ")
    assert again.stdout.startswith("deployment local/twice unchanged: release 1, ")
    assert bigger.stdout.startswith("deployment local/twice updated: release 2, ")
    assert "0-3 instances" in bigger.stdout
    assert [first.returncode, again.returncode, bigger.returncode] == [0, 0, 0]
    assert [name for name in local.deployments if name.endswith("/twice")] == ["local/twice"]
    version = local.versions[MODEL][0]["id"]
    assert local.deployments["local/twice"]["current_release"]["version"] == version


def test_smoke_collects_the_prediction_through_the_receiver(
    local: StandIn, collector: StartCollector
) -> None:
    receiver = collector()
    deployment = deployed(local, "smoke")
    env = {**standin_env(local.base_url), "DEPLOYMENT": deployment, "RECEIVER_URL": receiver.url}
    result = script("smoke", {**env, "RECEIVER_API_TOKEN": READ_TOKEN})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("smoke: ok, prediction ")
    prediction_id = result.stdout.split()[3]
    state = state_with_status(receiver.url, prediction_id)
    assert state is not None
    assert [d["status"] for d in state["deliveries"]] == ["processing", "succeeded"]
    assert state["deployment"] == deployment  # Replicate's full object, not Cog's smaller one
    validate(local.predictions[prediction_id], "/predictions/{prediction_id}", "get")


def test_receiver_back_within_the_retry_window_still_collects(
    local: StandIn, collector: StartCollector
) -> None:
    deployment = deployed(local, "retry")
    port = free_port()  # nothing listens there yet
    prediction_id = predict(local, deployment, f"http://127.0.0.1:{port}/webhooks/replicate")
    local.wait_until(
        lambda s: any(
            a.prediction_id == prediction_id and a.event == "completed" for a in s.attempts
        ),
        timeout=120,
    )
    receiver = collector(port)
    state = eventually(lambda: state_with_status(receiver.url, prediction_id), timeout=30)
    outcomes = [a.outcome for a in local.attempts if a.prediction_id == prediction_id]
    assert outcomes[-1] == "200"
    assert "ConnectError" in outcomes
    assert [d["status"] for d in state["deliveries"]] == ["succeeded"]


def test_receiver_down_past_the_retries_is_caught_up_by_reconciliation(
    local: StandIn, collector: StartCollector
) -> None:
    deployment = deployed(local, "reconcile")
    receiver = collector()
    local.hold_completions = True
    prediction_id = predict(local, deployment, f"{receiver.url}/webhooks/replicate")
    eventually(lambda: state_with_status(receiver.url, prediction_id, "processing"))
    receiver.stop()
    local.release_completions()
    local.wait_until(
        lambda s: any(
            a.prediction_id == prediction_id and a.outcome == "gave up" for a in s.attempts
        ),
        timeout=30,
    )
    restarted = collector(receiver.port)
    state = eventually(lambda: state_with_status(restarted.url, prediction_id), timeout=30)
    history = [(d["source"], d["status"]) for d in state["deliveries"]]
    assert history[0] == ("webhook", "processing")
    assert history[-1] == ("reconcile", "succeeded")  # fetched from the API, not delivered
    assert ("webhook", "succeeded") not in history
    assert len(state["output"]) == 2


def test_npy_output_file_is_fetched_from_the_standin_and_served(
    local: StandIn, collector: StartCollector
) -> None:
    receiver = collector()
    deployment = deployed(local, "files")
    webhook = f"{receiver.url}/webhooks/replicate"
    prediction_id = predict(local, deployment, webhook, output_format="npy")

    def stored() -> dict[str, Any] | None:
        state = state_with_status(receiver.url, prediction_id)
        return state if state and state["files"] and state["files"][0]["state"] == "done" else None

    state = eventually(stored)
    url = state["output"]
    assert url.startswith(f"{local.base_url}/files/")
    key = url.split("/")[-2]
    original, _ = local.files[key]
    assert state["files"][0]["sha256"] == hashlib.sha256(original).hexdigest()
    served = httpx.get(
        f"{receiver.url}/predictions/{prediction_id}/files/0",
        headers={"authorization": f"Bearer {READ_TOKEN}"},
    )
    assert np.load(io.BytesIO(served.content)).shape == (2, 384)


def test_a_queued_prediction_can_be_canceled(local: StandIn, collector: StartCollector) -> None:
    receiver = collector()
    deployment = deployed(local, "cancel")
    webhook = f"{receiver.url}/webhooks/replicate"
    local.hold_completions = True
    running = predict(local, deployment, webhook)
    queued = predict(local, deployment, webhook)
    api = Client(api_token=STANDIN_TOKEN, base_url=local.base_url)
    assert api.predictions.cancel(queued).status == "canceled"
    local.release_completions()
    assert eventually(lambda: state_with_status(receiver.url, running))
    assert eventually(lambda: state_with_status(receiver.url, queued, "canceled"))
    assert local.predictions[queued]["status"] == "canceled"


def test_make_deploy_and_smoke_run_the_same_scripts(
    local: StandIn, collector: StartCollector
) -> None:
    receiver = collector()
    env = {
        **CLEAN_ENV,
        **standin_env(local.base_url),
        "MODEL": MODEL,
        "DEPLOYMENT": "local/make",
        "HARDWARE": "cpu",
        "RECEIVER_URL": receiver.url,
        "RECEIVER_API_TOKEN": READ_TOKEN,
    }
    result = run_make("deploy", "smoke", env=env)
    assert result.returncode == 0, result.stderr
    assert "deployment local/make created: release 1" in result.stdout
    assert "smoke: ok, prediction " in result.stdout
