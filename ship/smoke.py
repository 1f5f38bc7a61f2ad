"""`make smoke`: one prediction on the deployment, collected end to end by our receiver.

Creates a prediction with a webhook to `$RECEIVER_URL/webhooks/replicate` (events `start` and
`completed`), then asks the receiver's read API, until a deadline, for the prediction's terminal
state: the webhook path is what is tested, not Replicate's API. The output must be three
384-float vectors in which the similar pair scores a higher cosine than the dissimilar pair.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
from replicate.client import Client

from localcog.polling import PollTimeoutError, poll
from ship.api import TERMINAL, ShipError, client, raw_prediction, reported, run_cli, with_backoff

TEXTS = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar.",
    "The quarterly tax filing is due on Monday.",
]
DIMENSIONS = 384


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def check_output(output: Any) -> tuple[float, float]:
    """The (similar, dissimilar) cosines, or a ShipError saying what is wrong with `output`."""
    if not isinstance(output, list) or len(output) != len(TEXTS):
        raise ShipError(f"expected {len(TEXTS)} vectors, got {str(output)[:80]}")
    for vector in output:
        if not isinstance(vector, list) or len(vector) != DIMENSIONS:
            raise ShipError(f"expected vectors of {DIMENSIONS} floats, got {str(vector)[:80]}")
    similar = cosine(output[0], output[1])
    dissimilar = cosine(output[0], output[2])
    if not similar > dissimilar:
        raise ShipError(f"similar pair scored {similar:.3f}, not above {dissimilar:.3f}")
    return similar, dissimilar


@dataclass
class ReceiverWatch:
    """Asks the receiver's read API for one prediction, remembering the last answer so that a
    timeout can say where it got stuck."""

    receiver_url: str
    token: str
    prediction_id: str
    last: str = "no answer yet"

    def terminal_state(self) -> dict[str, Any] | None:
        """The prediction's state once terminal; None while not yet (for `poll`)."""
        headers = {"authorization": f"Bearer {self.token}"}
        url = f"{self.receiver_url}/predictions/{self.prediction_id}"
        try:
            response = httpx.get(url, headers=headers, timeout=10)
        except httpx.HTTPError as exc:
            self.last = f"receiver unreachable: {exc!r}"
            return None
        if response.status_code in (401, 403):
            raise ShipError(f"receiver refused RECEIVER_API_TOKEN ({response.status_code})")
        if response.status_code == 429:  # held off after wrong tokens from this address
            wait = response.headers.get("retry-after", "?")
            raise ShipError(
                f"receiver holds off this address after wrong tokens: retry in {wait} s"
            )
        if response.status_code != 200:
            self.last = f"receiver answered {response.status_code}"
            return None
        state: dict[str, Any] = response.json()
        if state["status"] in TERMINAL:
            return state
        self.last = f"status {state['status']}"
        return None


def wait_for_terminal_state(
    receiver_url: str, token: str, prediction_id: str, deadline: float
) -> dict[str, Any]:
    """Poll the receiver until it holds the prediction's terminal state."""
    watch = ReceiverWatch(receiver_url, token, prediction_id)
    try:
        timeout = deadline - time.monotonic()
        return poll(watch.terminal_state, timeout, 0.25, "collecting the prediction")
    except PollTimeoutError:
        detail = f"not collected by the receiver in time ({watch.last})"
        raise ShipError(f"prediction {prediction_id} {detail}") from None


def smoke(api: Client, deployment: str, receiver_url: str, token: str, timeout: float) -> str:
    started = time.monotonic()
    receiver_url = receiver_url.rstrip("/")
    with reported(f"create a prediction on {deployment}"):
        prediction = with_backoff(
            lambda: api.deployments.predictions.create(
                deployment,
                input={"texts": TEXTS},
                webhook=f"{receiver_url}/webhooks/replicate",
                webhook_events_filter=["start", "completed"],
            )
        )
    try:
        state = wait_for_terminal_state(receiver_url, token, prediction.id, started + timeout)
    except ShipError as exc:  # say where it got stuck: in the model, or between the two
        with reported(f"{exc}; then reading it from the API"):
            status = raw_prediction(api, prediction.id)["status"]
        raise ShipError(f"{exc}; Replicate says it is {status}") from None
    if state["status"] != "succeeded":
        raise ShipError(f"prediction {prediction.id} {state['status']}: {state.get('error')}")
    similar, dissimilar = check_output(state["output"])
    return (
        f"smoke: ok, prediction {prediction.id} on {deployment} collected by the receiver in "
        f"{time.monotonic() - started:.1f} s; cosine similar {similar:.3f} > dissimilar "
        f"{dissimilar:.3f}"
    )


def main() -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m ship.smoke", description=__doc__)
    parser.add_argument("--deployment", default=env("DEPLOYMENT"), help="owner/name")
    parser.add_argument("--receiver-url", default=env("RECEIVER_URL"))
    parser.add_argument("--timeout", default=env("SMOKE_TIMEOUT", "300"), help="seconds")
    args = parser.parse_args()

    def body() -> str:
        if not args.deployment or not args.receiver_url:
            raise ShipError("set DEPLOYMENT (owner/name) and RECEIVER_URL (the receiver's URL)")
        token = env("RECEIVER_API_TOKEN")
        if not token:
            raise ShipError("RECEIVER_API_TOKEN is not set: the receiver's read API needs it")
        try:
            timeout = float(args.timeout)
        except ValueError:
            raise ShipError(f"SMOKE_TIMEOUT must be seconds, not {args.timeout!r}") from None
        return smoke(client(), args.deployment, args.receiver_url, token, timeout)

    return run_cli("smoke", body)


if __name__ == "__main__":
    raise SystemExit(main())
