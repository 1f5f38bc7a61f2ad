"""The calls the receiver makes to Replicate, through the official client.

The client honours REPLICATE_API_TOKEN and REPLICATE_BASE_URL, so the receiver can be pointed at
a local stand-in. Predictions are fetched as raw JSON: replicate 1.0.7 raises a validation error
on the status `aborted`, which is exactly the kind of state reconciliation must not lose.

`ship/api.py` does the same job for the ship scripts (its raw prediction GET is this one's
twin). The repetition is deliberate: the receiver ships on its own and imports nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from replicate.client import Client
from replicate.exceptions import ReplicateError

from receiver.settings import Settings


def client(settings: Settings) -> Client:
    token = settings.replicate_api_token
    return Client(
        api_token=token.get_secret_value() if token else None,
        base_url=settings.replicate_base_url,
    )


def default_webhook_secret(settings: Settings) -> str:
    return str(client(settings).webhooks.default.secret().key)


def prediction(settings: Settings, prediction_id: str) -> dict[str, Any]:
    path = f"/v1/predictions/{quote(prediction_id, safe='')}"  # the caller checks it; and escape
    response = client(settings)._request("GET", path)
    body: dict[str, Any] = response.json()
    return body


# Replicate's 429 detail: "Request was throttled. Expected available in 6 seconds."
_AVAILABLE_IN = re.compile(r"available in (\d+(?:\.\d+)?) second")


class ThrottledError(Exception):
    """429: Replicate will take the call again `retry_after` seconds from now."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"throttled by Replicate for {retry_after:g} s")
        self.retry_after = retry_after


def retry_after(headers: Any, detail: str) -> float:
    """The reset hint of a 429: Retry-After in seconds, else the seconds its detail names,
    else one second."""
    header = str(headers.get("retry-after") or "").strip()
    if header.replace(".", "", 1).isdigit():
        return float(header)
    found = _AVAILABLE_IN.search(detail)
    return float(found.group(1)) if found else 1.0


def create_prediction(
    settings: Settings, deployment: str, payload: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """POST a prediction to a deployment; raises ThrottledError on 429 and ReplicateError
    on any other refusal. The raw response, not the client's model: its headers carry the
    reset hint that `deployments.predictions.create` drops."""
    owner, _, name = deployment.partition("/")
    path = f"/v1/deployments/{quote(owner, safe='')}/{quote(name, safe='')}/predictions"
    response = client(settings)._client.request("POST", path, json=payload, timeout=timeout)
    if response.status_code == 429:
        raise ThrottledError(retry_after(response.headers, response.text))
    if response.status_code >= 400:
        raise ReplicateError.from_response(response)
    body: dict[str, Any] = response.json()
    return body


def cancel_prediction(settings: Settings, prediction_id: str) -> None:
    client(settings)._request("POST", f"/v1/predictions/{quote(prediction_id, safe='')}/cancel")


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def predictions_created_after(settings: Settings, after: float) -> Iterator[dict[str, Any]]:
    """Every prediction created at or after `after`, newest first, page by page. A `next`
    link to another host is refused: it would carry our token there."""
    api = client(settings)._client
    url = httpx.URL("/v1/predictions", params={"created_after": iso(after)})
    while True:
        response = api.request("GET", url)
        if response.status_code >= 400:
            raise ReplicateError.from_response(response)
        page = response.json()
        yield from page["results"]
        if not page.get("next"):
            return
        url = httpx.URL(page["next"])
        if (url.scheme, url.netloc) != (api.base_url.scheme, api.base_url.netloc):
            raise ValueError(f"Replicate's next page is on another host: {url}")


def deployment_exists(settings: Settings, deployment: str) -> bool:
    """Whether Replicate knows the deployment; ReplicateError on any other answer than 404."""
    owner, _, name = deployment.partition("/")
    path = f"/v1/deployments/{quote(owner, safe='')}/{quote(name, safe='')}"
    response = client(settings)._client.request("GET", path)
    if response.status_code == 404:
        return False
    if response.status_code >= 400:
        raise ReplicateError.from_response(response)
    return True


class Replicate:
    """The calls corpus jobs make, bound to the receiver's settings. A create call gives up
    after a quarter of RECEIVER_JOB_CLAIM_SECONDS: a claim always outlives the call it covers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.create_timeout = settings.receiver_job_claim_seconds / 4

    def create(self, deployment: str, payload: dict[str, Any]) -> dict[str, Any]:
        return create_prediction(self.settings, deployment, payload, self.create_timeout)

    def cancel(self, prediction_id: str) -> None:
        cancel_prediction(self.settings, prediction_id)

    def created_after(self, after: float) -> Iterator[dict[str, Any]]:
        return predictions_created_after(self.settings, after)

    def deployment_exists(self, deployment: str) -> bool:
        return deployment_exists(self.settings, deployment)
