"""The receiver as deployed: behind Caddy on HTTPS, the stand-in delivering through it, and
the client's address taken from the proxy's headers only when they come from the proxy."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from receiver.wrong_tokens import MAX_FAILURES
from standin.local import ReceiverProcess, receiver_process
from tests.support.commands import CLEAN_ENV
from tests.support.proxy import Caddy, caddy_proxy
from tests.support.receiving import READ_TOKEN, signed
from tests.support.standin import STANDIN_SECRET, standin_deployment

PROXY = "127.0.0.1"  # Caddy reaches the receiver from this address
BROWSER = "127.0.0.3"  # a client of the proxy (Linux routes all of 127/8 to loopback)
STRANGER = "127.0.0.2"  # a client that reaches the receiver directly
BEARER = {"authorization": f"Bearer {READ_TOKEN}"}


@dataclass
class Deployed:
    receiver: ReceiverProcess
    log: Path
    caddy: Caddy


def receiver_env(tmp: Path, **extra: str) -> dict[str, str]:
    return {
        **CLEAN_ENV,
        "REPLICATE_WEBHOOK_SECRET": STANDIN_SECRET,
        "RECEIVER_API_TOKEN": READ_TOKEN,
        "RECEIVER_DATABASE_URL": f"sqlite:///{tmp / 'receiver.db'}",
        "RECEIVER_OUTPUT_DIR": str(tmp / "outputs"),
        **extra,
    }


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """A receiver process that trusts forwarded headers from Caddy's address, and Caddy."""
    tmp = tmp_path_factory.mktemp("deployed")
    log = tmp / "receiver.log"
    env = receiver_env(tmp, RECEIVER_FORWARDED_ALLOW_IPS=PROXY)
    with (
        receiver_process(env, log) as receiver,
        caddy_proxy(f"127.0.0.1:{receiver.port}", tmp / "caddy") as caddy,
    ):
        yield Deployed(receiver, log, caddy)


def client_from(address: str, verify: ssl.SSLContext | bool = True) -> httpx.Client:
    """An HTTP client whose connections come from `address`."""
    transport = httpx.HTTPTransport(local_address=address, verify=verify)
    return httpx.Client(transport=transport, timeout=30)


def refused_line(log: Path, webhook_id: str) -> str:
    """The receiver's log line about this refused delivery (written before it answered)."""
    lines = [line for line in log.read_text().splitlines() if webhook_id in line]
    assert len(lines) == 1, lines
    return lines[0]


def forged(base_url: str, client: httpx.Client, claimed: str) -> str:
    """A delivery with a bad signature that claims to come from `claimed`; its webhook-id."""
    webhook_id = f"msg_{uuid.uuid4().hex}"
    raw, headers = signed({"id": "p", "status": "succeeded"}, webhook_id, key=b"k" * 32)
    response = client.post(
        f"{base_url}/webhooks/replicate",
        content=raw,
        headers={**headers, "x-forwarded-for": claimed},
    )
    assert response.status_code == 401
    return webhook_id


def predict_through_the_standin(webhook: str, vectors: list[list[float]]) -> str:
    """A deployment prediction on the stand-in whose model returns `vectors`, with its `start`
    and `completed` webhooks answered 200 by `webhook`; returns the prediction's id."""
    with standin_deployment(STANDIN_SECRET) as deployment:
        prediction_id = deployment.predict(webhook, ["a cat", "a kitten"])
        deployment.report(prediction_id, {"status": "processing"})
        deployment.report(prediction_id, {"status": "succeeded", "output": vectors})
        deployment.wait_delivered(prediction_id, {"start", "completed"})
    return prediction_id


def test_signed_webhooks_reach_the_receiver_over_https_through_caddy(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stand-in's signed webhooks reach the receiver over HTTPS through Caddy, and the read
    API answers through it."""
    caddy = deployed.caddy
    # The sender verifies TLS as in production; here it trusts Caddy's local CA, as a
    # client would trust Let's Encrypt's.
    monkeypatch.setenv("SSL_CERT_FILE", str(caddy.root_cert))
    vectors = [[0.25] * 4, [0.5] * 4]
    prediction_id = predict_through_the_standin(f"{caddy.url}/webhooks/replicate", vectors)

    stored = httpx.get(
        f"{caddy.url}/predictions/{prediction_id}",
        headers=BEARER,
        verify=caddy.tls(),
        timeout=30,
    )
    assert stored.status_code == 200, stored.text
    body = stored.json()
    assert body["status"] == "succeeded"
    assert body["output"] == vectors
    assert len(body["deliveries"]) == 2
    # Real TLS: a client without Caddy's CA cannot connect.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{caddy.url}/healthz", trust_env=False, timeout=30)


def test_behind_caddy_the_client_address_is_the_one_caddy_saw(deployed: Deployed) -> None:
    """A forged delivery through Caddy is logged with its client's address: Caddy replaces
    the client's own X-Forwarded-For with the address it saw, and the receiver believes Caddy."""
    with client_from(BROWSER, verify=deployed.caddy.tls()) as browser:
        through = forged(deployed.caddy.url, browser, claimed="203.0.113.7")
    line = refused_line(deployed.log, through)
    assert f"client {BROWSER})" in line
    assert "signature verification failed" in line
    assert "203.0.113.7" not in deployed.log.read_text()


def test_behind_caddy_sign_in_attempts_are_limited_per_client(deployed: Deployed) -> None:
    """The console's limit on wrong tokens holds off the client that guessed, by the address
    Caddy saw, not every user of the proxy."""
    tls = deployed.caddy.tls()
    sign_in = f"{deployed.caddy.url}/ui/sign-in"
    guesser = "127.0.0.4"
    with client_from(guesser, verify=tls) as client:
        for _ in range(MAX_FAILURES):
            assert client.post(sign_in, data={"token": "guess"}).status_code == 403
        assert client.post(sign_in, data={"token": READ_TOKEN}).status_code == 429
    with client_from(BROWSER, verify=tls) as browser:
        assert browser.post(sign_in, data={"token": READ_TOKEN}).status_code == 303


def test_a_forged_forwarded_header_from_elsewhere_is_not_believed(deployed: Deployed) -> None:
    with client_from(STRANGER) as stranger:
        direct = forged(deployed.receiver.url, stranger, claimed="203.0.113.8")
    assert f"client {STRANGER})" in refused_line(deployed.log, direct)
    assert "203.0.113.8" not in deployed.log.read_text()


def test_by_default_no_forwarded_header_is_believed(tmp_path: Path) -> None:
    """uvicorn's own default believes 127.0.0.1: any local process could claim any address."""
    log = tmp_path / "receiver.log"
    with receiver_process(receiver_env(tmp_path), log) as receiver, client_from(PROXY) as local:
        webhook_id = forged(receiver.url, local, claimed="203.0.113.9")
    assert f"client {PROXY})" in refused_line(log, webhook_id)
    assert "203.0.113.9" not in log.read_text()
