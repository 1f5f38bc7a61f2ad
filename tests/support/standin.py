"""The stand-in in tests: its credentials, the environment that points our scripts and the
`replicate` client at it, and a deployment on it whose predictions send real signed webhooks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from replicate.client import Client

from localcog.loopback import serve_in_thread
from standin.app import create_standin
from standin.memory import StandIn

STANDIN_TOKEN = "r8_test_token"
STANDIN_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
# The smallest version schema the stand-in validates inputs against.
MINIMAL_SCHEMA = {
    "openapi": "3.0.2",
    "components": {
        "schemas": {
            "Input": {
                "type": "object",
                "properties": {"texts": {"type": "array", "items": {"type": "string"}}},
                "required": ["texts"],
            }
        }
    },
}


def standin_env(base_url: str) -> dict[str, str]:
    """REPLICATE_API_TOKEN and REPLICATE_BASE_URL for the stand-in at `base_url`."""
    return {"REPLICATE_API_TOKEN": STANDIN_TOKEN, "REPLICATE_BASE_URL": base_url}


@dataclass
class StandInDeployment:
    """The deployment `local/embed` on a running stand-in. The test plays the model's side
    (`report`, as Cog reports a prediction); the stand-in signs and sends the webhooks."""

    memory: StandIn
    url: str
    replicate: Client

    def predict(self, webhook: str, texts: list[str]) -> str:
        """A prediction asking for its `start` and `completed` webhooks; its id."""
        prediction = self.replicate.deployments.predictions.create(
            "local/embed",
            input={"texts": texts},
            webhook=webhook,
            webhook_events_filter=["start", "completed"],
        )
        return str(prediction.id)

    def report(self, prediction_id: str, update: dict[str, Any]) -> None:
        httpx.post(f"{self.url}/_cog/{prediction_id}", json=update, timeout=30).raise_for_status()

    def wait_delivered(self, prediction_id: str, events: set[str]) -> None:
        """Until each of `events` was answered 200 by the webhook's receiver."""

        def delivered() -> set[str]:
            attempts = self.memory.attempts
            return {
                a.event for a in attempts if a.prediction_id == prediction_id and a.outcome == "200"
            }

        with self.memory.changed:
            answered = self.memory.changed.wait_for(lambda: events <= delivered(), 30)
        assert answered, [vars(a) for a in self.memory.attempts]


@contextmanager
def standin_deployment(secret: str) -> Iterator[StandInDeployment]:
    """A stand-in that signs its webhooks with `secret`, serving `local/embed`."""
    memory = StandIn(token=STANDIN_TOKEN, secret=secret)
    with serve_in_thread(create_standin(memory)) as url:
        memory.base_url = url
        replicate = Client(api_token=STANDIN_TOKEN, base_url=url)
        version = memory.add_version("local/embed", MINIMAL_SCHEMA)
        replicate.deployments.create(
            name="embed",
            model="local/embed",
            version=version,
            hardware="cpu",
            min_instances=0,
            max_instances=1,
        )
        yield StandInDeployment(memory, url, replicate)
