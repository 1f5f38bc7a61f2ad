"""The stand-in answers as Replicate does: checked against Replicate's OpenAPI schema."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import pytest

from tests.conftest import STANDIN_SECRET, STANDIN_TOKEN
from tests.openapi_contract import validate

AUTH = {"authorization": f"Bearer {STANDIN_TOKEN}"}


@pytest.mark.parametrize("status", ["starting", "succeeded", "failed", "aborted"])
def test_prediction_matches_the_schema(standin: Any, status: str) -> None:
    url, state = standin
    state.put("abc", status, output=[[0.1]] if status == "succeeded" else None)
    body = httpx.get(f"{url}/v1/predictions/abc", headers=AUTH).json()
    validate(body, "/predictions/{prediction_id}", "get")


def test_the_contract_check_can_fail(standin: Any) -> None:
    url, state = standin
    state.put("bad", "exploded")  # not a status Replicate has
    body = httpx.get(f"{url}/v1/predictions/bad", headers=AUTH).json()
    with pytest.raises(jsonschema.ValidationError):
        validate(body, "/predictions/{prediction_id}", "get")


def test_webhook_secret_matches_the_schema(standin: Any) -> None:
    url, _ = standin
    body = httpx.get(f"{url}/v1/webhooks/default/secret", headers=AUTH).json()
    validate(body, "/webhooks/default/secret", "get")
    assert body == {"key": STANDIN_SECRET}


def test_token_required_and_unknown_is_404(standin: Any) -> None:
    url, _ = standin
    assert httpx.get(f"{url}/v1/webhooks/default/secret").status_code == 401
    missing = httpx.get(f"{url}/v1/predictions/none", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json()["status"] == 404
