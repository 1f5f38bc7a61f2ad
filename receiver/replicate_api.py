"""The two calls the receiver makes to Replicate, through the official client.

The client honours REPLICATE_API_TOKEN and REPLICATE_BASE_URL, so the receiver can be pointed at
a local stand-in. Predictions are fetched as raw JSON: replicate 1.0.7 raises a validation error
on the status `aborted`, which is exactly the kind of state reconciliation must not lose.

`ship/api.py` does the same job for the ship scripts (its raw prediction GET is this one's
twin). The repetition is deliberate: the receiver ships on its own and imports nothing else.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from replicate.client import Client

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
