"""Predictions against a live Cog server, as a client (or Replicate) makes them."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import httpx
import numpy as np

from localcog.polling import poll
from localcog.server import CogServer

RETRIES_409 = 100


def predict(cog: CogServer, payload: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(f"{cog.url}/predictions", json=payload, timeout=300, **kw)


def predict_retrying(cog: CogServer, payload: dict[str, Any], **kw: Any) -> httpx.Response:
    """`predict`, as a client of a concurrent server must: a 409 "At capacity" is sent again.
    coglet 0.23 refuses requests that arrive at the same instant even with slots free: its
    permit pool takes one with `try_lock` on the pool's receiver (permit/pool.rs,
    `try_acquire`), and whoever loses that lock race is "At capacity"."""
    for _ in range(RETRIES_409):
        response = predict(cog, payload, **kw)
        if response.status_code != 409:
            return response
        time.sleep(0.005)  # a client's back-off, not a wait for anything in particular
    return response


def decode_npy(data_uri: str) -> np.ndarray:
    assert data_uri.startswith("data:")
    array: np.ndarray = np.load(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1])))
    return array


def wait_until_run_began(cog: CogServer, prediction_id: str) -> None:
    """Wait for run()'s first line in the server's log. coglet 0.23 says "processing" before it
    has parsed the input, and a cancel in that window fails the prediction or is lost (README);
    it has no GET for one prediction, and it sends "logs" webhooks only with the result."""
    line = f'"prediction_id":"{prediction_id}","source":"Stdout"'

    def began() -> bool | None:
        return True if line in cog.log() else None

    poll(began, timeout=60, interval=0.02, what=f"run() of {prediction_id}")
