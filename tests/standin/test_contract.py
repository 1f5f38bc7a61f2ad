"""The stand-in answers as Replicate does: checked against Replicate's OpenAPI schema."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from standin.local import MODEL
from standin.memory import StandIn, iso
from tests.support.live import LiveStandIn
from tests.support.loopback_http import WebhookSink
from tests.support.openapi_contract import validate
from tests.support.standin import STANDIN_SECRET, STANDIN_TOKEN

AUTH = {"authorization": f"Bearer {STANDIN_TOKEN}"}


@pytest.mark.parametrize("status", ["starting", "succeeded", "failed", "aborted"])
def test_prediction_matches_the_schema(standin: LiveStandIn, status: str) -> None:
    url = standin.url
    memory = standin.memory
    memory.put("abc", status, output=[[0.1]] if status == "succeeded" else None)
    body = httpx.get(f"{url}/v1/predictions/abc", headers=AUTH).json()
    validate(body, "/predictions/{prediction_id}", "get")


def test_the_contract_check_can_fail(standin: LiveStandIn) -> None:
    url = standin.url
    memory = standin.memory
    memory.put("bad", "exploded")  # not a status Replicate has
    body = httpx.get(f"{url}/v1/predictions/bad", headers=AUTH).json()
    with pytest.raises(jsonschema.ValidationError):
        validate(body, "/predictions/{prediction_id}", "get")


def test_the_prediction_list_pages_newest_first_within_its_window(standin: LiveStandIn) -> None:
    memory = standin.memory
    start = 1_800_000_000.0
    for i in range(250):  # one a second
        memory.put(f"p{i:03d}", "succeeded", created_at=iso(start + i))
    window = {"created_after": iso(start + 20), "created_before": iso(start + 240)}
    seen = []
    url: str | None = f"{standin.url}/v1/predictions"
    params: dict[str, str] | None = window
    while url is not None:
        page = httpx.get(url, params=params, headers=AUTH).json()
        validate(page, "/predictions", "get")
        assert len(page["results"]) <= 100
        seen += [prediction["id"] for prediction in page["results"]]
        url = page["next"]
        params = None  # the next link carries the filters and the cursor
    assert seen == [f"p{i:03d}" for i in range(239, 19, -1)]  # after inclusive, before not


def test_the_prediction_list_refuses_a_date_that_is_not_one(standin: LiveStandIn) -> None:
    answer = httpx.get(
        f"{standin.url}/v1/predictions", params={"created_after": "yesterday"}, headers=AUTH
    )
    assert answer.status_code == 400
    assert "created_after" in answer.json()["detail"]


def test_webhook_secret_matches_the_schema(standin: LiveStandIn) -> None:
    url = standin.url
    body = httpx.get(f"{url}/v1/webhooks/default/secret", headers=AUTH).json()
    validate(body, "/webhooks/default/secret", "get")
    assert body == {"key": STANDIN_SECRET}


def test_token_required_and_unknown_is_404(standin: LiveStandIn) -> None:
    url = standin.url
    assert httpx.get(f"{url}/v1/webhooks/default/secret").status_code == 401
    missing = httpx.get(f"{url}/v1/predictions/none", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json()["status"] == 404


def create_deployment(url: str, name: str, version: str) -> None:
    body = {"name": name, "model": MODEL, "version": version, "hardware": "cpu"}
    response = httpx.post(
        f"{url}/v1/deployments", json={**body, "min_instances": 0, "max_instances": 1}, headers=AUTH
    )
    assert response.status_code == 200


@dataclass(frozen=True)
class RegisteredModel:
    """The live stand-in with MODEL's version registered, as `cog push` would leave it."""

    url: str
    memory: StandIn
    version: str


@pytest.fixture
def registered(standin: LiveStandIn, schema_file: Path) -> RegisteredModel:
    version = standin.memory.add_version(MODEL, json.loads(schema_file.read_text()))
    return RegisteredModel(url=standin.url, memory=standin.memory, version=version)


def test_models_and_versions_match_the_schema(registered: RegisteredModel) -> None:
    url = registered.url
    version = registered.version
    base = f"{url}/v1/models/{MODEL}"
    model = httpx.get(base, headers=AUTH).json()
    validate(model, "/models/{model_owner}/{model_name}", "get")
    assert model["latest_version"]["id"] == version
    listed = httpx.get(f"{base}/versions", headers=AUTH).json()
    validate(listed, "/models/{model_owner}/{model_name}/versions", "get")
    one = httpx.get(f"{base}/versions/{version}", headers=AUTH).json()
    validate(one, "/models/{model_owner}/{model_name}/versions/{version_id}", "get")
    assert httpx.get(f"{base}/versions/{'0' * 64}", headers=AUTH).status_code == 404
    assert httpx.get(f"{url}/v1/models/local/none", headers=AUTH).status_code == 404


def test_deployments_match_the_schema(registered: RegisteredModel) -> None:
    url = registered.url
    version = registered.version
    body = {
        "name": "embed",
        "model": MODEL,
        "version": version,
        "hardware": "cpu",
        "min_instances": 0,
        "max_instances": 1,
    }
    created = httpx.post(f"{url}/v1/deployments", json=body, headers=AUTH)
    validate(created.json(), "/deployments", "post")
    path = "/deployments/{deployment_owner}/{deployment_name}"
    got = httpx.get(f"{url}/v1/deployments/local/embed", headers=AUTH).json()
    validate(got, path, "get")
    updated = httpx.patch(
        f"{url}/v1/deployments/local/embed", json={"max_instances": 2}, headers=AUTH
    ).json()
    validate(updated, path, "patch")
    assert updated["current_release"]["number"] == 2
    assert httpx.post(f"{url}/v1/deployments", json=body, headers=AUTH).status_code == 409


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"max_instances": 21}, "max_instances must be an integer in 0..20"),
        ({"min_instances": 2, "max_instances": 1}, "min_instances is above max_instances"),
        ({"version": "0" * 64}, "does not exist"),
        ({"hardware": None}, "hardware must be a string"),
    ],
)
def test_deployment_requests_are_checked(
    registered: RegisteredModel, change: dict[str, Any], detail: str
) -> None:
    url = registered.url
    version = registered.version
    body = {"name": "d", "model": MODEL, "version": version, "hardware": "cpu"}
    body |= {"min_instances": 0, "max_instances": 1, **change}
    response = httpx.post(f"{url}/v1/deployments", json=body, headers=AUTH)
    assert response.status_code == 422
    assert detail in response.json()["detail"]


def test_deployment_predictions_match_the_schema(registered: RegisteredModel) -> None:
    url = registered.url
    memory = registered.memory
    version = registered.version
    create_deployment(url, "p", version)
    path = "/deployments/{deployment_owner}/{deployment_name}/predictions"
    created = httpx.post(
        f"{url}/v1{path.replace('{deployment_owner}', 'local').replace('{deployment_name}', 'p')}",
        json={"input": {"texts": ["hi"]}, "webhook": "https://example.com/hook"},
        headers=AUTH,
    )
    assert created.status_code == 201
    validate(created.json(), path, "post", "201")
    pid = created.json()["id"]
    canceled = httpx.post(f"{url}/v1/predictions/{pid}/cancel", headers=AUTH).json()
    validate(canceled, "/predictions/{prediction_id}/cancel", "post")
    assert canceled["status"] == "canceled"
    assert memory.predictions[pid]["deployment"] == "local/p"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"input": {}}, "input: 'texts' is a required property"),
        ({"input": {"texts": "hi"}}, "texts: 'hi' is not of type 'array'"),
        ({"input": {"texts": ["a"], "output_format": "csv"}}, "output_format"),
        ({"input": {"texts": ["a"]}, "version": "x"}, "unknown fields: version"),
        ({"input": {"texts": ["a"]}, "webhook": "ftp://x"}, "webhook must be an http(s) URL"),
        ({"input": {"texts": ["a"]}, "webhook_events_filter": ["all"]}, "webhook_events_filter"),
        ([1, 2], "the body must be a JSON object"),
    ],
)
def test_prediction_requests_are_checked_against_the_version(
    registered: RegisteredModel, body: Any, detail: str
) -> None:
    url = registered.url
    version = registered.version
    create_deployment(url, "q", version)
    response = httpx.post(f"{url}/v1/deployments/local/q/predictions", json=body, headers=AUTH)
    assert response.status_code == 422
    assert detail in response.json()["detail"]


def test_a_prediction_cog_never_finishes_is_canceled_at_the_deadline(
    registered: RegisteredModel, sink: WebhookSink
) -> None:
    url = registered.url
    memory = registered.memory
    version = registered.version
    memory.cog_url = sink.url  # takes the prediction (any POST gets 200) and never calls back
    memory.deadline_seconds = 0.2
    create_deployment(url, "slow", version)
    created = httpx.post(
        f"{url}/v1/deployments/local/slow/predictions",
        json={"input": {"texts": ["hi"]}, "webhook": sink.url},
        headers=AUTH,
    ).json()
    done = sink.wait_for(lambda e: e["id"] == created["id"] and e.get("status") == "canceled")
    assert done["error"] == "deadline reached"
    validate(done, "/predictions/{prediction_id}", "get")


def test_creations_past_the_limit_get_replicates_429_until_the_minute_has_room(
    registered: RegisteredModel,
) -> None:
    memory = registered.memory
    create_deployment(registered.url, "busy", registered.version)
    now = [1_000_000.0]
    memory.clock = lambda: now[0]
    memory.creations_per_minute = 3
    url = f"{registered.url}/v1/deployments/local/busy/predictions"

    def create() -> httpx.Response:
        return httpx.post(url, json={"input": {"texts": ["a"]}}, headers=AUTH)

    for second in range(3):
        now[0] = 1_000_000.0 + 10 * second
        assert create().status_code == 201
    refused = create()
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "40"  # the first of the three leaves the window
    assert refused.json()["detail"] == "Request was throttled. Expected available in 40 seconds."
    now[0] = 1_000_060.5
    assert create().status_code == 201


def test_an_output_file_is_gone_an_hour_after_it_was_made(registered: RegisteredModel) -> None:
    memory = registered.memory
    now = [1_000_000.0]
    memory.clock = lambda: now[0]
    stored = httpx.put(f"{registered.url}/_uploads/embeddings.npy", content=b"npy bytes")
    location = stored.headers["location"]
    assert httpx.get(location).content == b"npy bytes"
    now[0] += 3599
    assert httpx.get(location).status_code == 200
    now[0] += 2
    assert httpx.get(location).status_code == 404
