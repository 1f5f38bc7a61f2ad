"""Many predictions at once under Cog's real HTTP server: each gets exactly its own result, a
cancel or a failure touches no one else, and the server refuses only beyond its slots."""

from __future__ import annotations

import json
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from localcog.server import CogServer, cog_server
from predict import MAX_TEXTS, MAX_TOTAL_BYTES
from tests.support.cog_runs import (
    decode_npy,
    predict,
    predict_retrying,
    wait_until_run_began,
)
from tests.support.embeddings import VARIED_TEXTS, assert_same_rows
from tests.support.loopback_http import WebhookSink

pytestmark = pytest.mark.usefixtures("schema_file")

LONG_TEXTS = [f"{i} " + "word " * 300 for i in range(MAX_TEXTS)]  # seconds of work on the CPU
INPUTS = [
    {"texts": VARIED_TEXTS, "normalize": True, "output_format": "json"},
    {"texts": ["one query"], "normalize": False, "output_format": "npy"},
    {"texts": [f"text number {i} about {i % 7}" for i in range(300)], "output_format": "npy"},
    {"texts": VARIED_TEXTS[::-1], "normalize": False, "output_format": "json"},
    {"texts": ["a search box query"], "normalize": True, "output_format": "json"},
    {
        "texts": [f"{i} {w} " * 60 for i, w in enumerate(("red", "cat", "sea") * 13)],
        "normalize": False,
        "output_format": "npy",
    },
    {"texts": ["another query", "and its neighbour"], "output_format": "json"},
    {"texts": ["x"], "normalize": True, "output_format": "npy"},
]


def output_vectors(body: dict[str, Any]) -> np.ndarray:
    assert body["status"] == "succeeded", body.get("error")
    output = body["output"]
    if isinstance(output, str):
        return decode_npy(output)
    return np.asarray(output, dtype=np.float32)


def assert_same_vectors(got: np.ndarray, expected: np.ndarray) -> None:
    assert_same_rows(got, expected)
    # Lengths tell a normalised vector (1) from a mean-pooled one (2-7); in bfloat16 the
    # company a text keeps in a pass moves its length by up to ~0.2%.
    np.testing.assert_allclose(
        np.linalg.norm(got, axis=1), np.linalg.norm(expected, axis=1), rtol=1e-2
    )


def together(cog: CogServer, payloads: list[dict[str, Any]]) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(payloads)) as pool:
        return list(pool.map(lambda p: predict_retrying(cog, p), payloads))


def test_concurrent_predictions_return_what_one_at_a_time_returns(cog: CogServer) -> None:
    one_at_a_time = [output_vectors(predict(cog, {"input": i}).json()) for i in INPUTS]
    at_once = together(cog, [{"input": i} for i in INPUTS * 2])
    for position, response in enumerate(at_once):
        assert response.status_code == 200
        expected = one_at_a_time[position % len(INPUTS)]
        assert_same_vectors(output_vectors(response.json()), expected)


def test_a_failing_prediction_fails_alone(cog: CogServer) -> None:
    bad = [
        {"input": {"texts": []}},
        {"input": {"texts": ["é" * (MAX_TOTAL_BYTES // 2)] * 2}},
    ]
    good = [{"input": i} for i in INPUTS[:4]]
    responses = together(cog, [bad[0], *good[:2], bad[1], *good[2:]])
    bodies = [r.json() for r in responses]
    assert bodies[0]["status"] == "failed"
    assert "1 to 1024 strings; got 0" in bodies[0]["error"]
    assert bodies[3]["status"] == "failed"
    assert f"the limit is {MAX_TOTAL_BYTES}" in bodies[3]["error"]
    for body, payload in zip([*bodies[1:3], *bodies[4:]], good, strict=True):
        expected = output_vectors(predict(cog, payload).json())
        assert_same_vectors(output_vectors(body), expected)


def test_async_predictions_at_once_each_get_their_own_webhook(
    cog: CogServer, sink: WebhookSink
) -> None:
    ids = [f"together-{n}-{uuid.uuid4().hex}" for n in range(len(INPUTS))]
    payloads = [
        {"id": i, "input": p, "webhook": sink.url, "webhook_events_filter": ["completed"]}
        for i, p in zip(ids, INPUTS, strict=True)
    ]
    with ThreadPoolExecutor(len(payloads)) as pool:
        accepted = list(
            pool.map(
                lambda p: predict_retrying(cog, p, headers={"Prefer": "respond-async"}), payloads
            )
        )
    assert [r.status_code for r in accepted] == [202] * len(ids)
    for prediction_id, payload in zip(ids, INPUTS, strict=True):
        done = sink.wait_for(lambda e, i=prediction_id: e["id"] == i)
        expected = output_vectors(predict(cog, {"input": payload}).json())
        assert_same_vectors(output_vectors(done), expected)


def test_cancelling_some_predictions_leaves_the_others_whole(
    cog: CogServer, sink: WebhookSink
) -> None:
    doomed = [f"doomed-{n}-{uuid.uuid4().hex}" for n in range(2)]
    for prediction_id in doomed:
        body = {
            "id": prediction_id,
            "input": {"texts": LONG_TEXTS},
            "webhook": sink.url,
            "webhook_events_filter": ["completed"],
        }
        assert predict(cog, body, headers={"Prefer": "respond-async"}).status_code == 202
    for prediction_id in doomed:
        wait_until_run_began(cog, prediction_id)
    with ThreadPoolExecutor(4) as pool:
        meanwhile = [pool.submit(predict_retrying, cog, {"input": i}) for i in INPUTS[:4]]
        for prediction_id in doomed:
            cancel = httpx.post(f"{cog.url}/predictions/{prediction_id}/cancel", timeout=10)
            assert cancel.status_code == 200
        answers = [f.result() for f in meanwhile]
    for prediction_id in doomed:
        final = sink.wait_for(lambda e, i=prediction_id: e["id"] == i)
        assert final["status"] == "canceled"
    for answer, payload in zip(answers, INPUTS[:4], strict=True):
        expected = output_vectors(predict(cog, {"input": payload}).json())
        assert_same_vectors(output_vectors(answer.json()), expected)


def test_a_client_that_goes_away_cancels_its_prediction(cog: CogServer, sink: WebhookSink) -> None:
    prediction_id = f"gone-{uuid.uuid4().hex}"
    body = {
        "id": prediction_id,
        "input": {"texts": LONG_TEXTS},
        "webhook": sink.url,
        "webhook_events_filter": ["completed"],
    }
    raw = json.dumps(body).encode()
    host, port = cog.url.removeprefix("http://").split(":")
    head = (
        f"POST /predictions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n"
    )
    with socket.create_connection((host, int(port))) as client:  # a sync prediction...
        client.sendall(head.encode() + raw)
        wait_until_run_began(cog, prediction_id)
    # ...whose client hung up while it ran
    final = sink.wait_for(lambda e: e["id"] == prediction_id)
    assert final["status"] == "canceled"
    assert output_vectors(predict(cog, {"input": INPUTS[1]}).json()).shape == (1, 384)


def test_a_burst_is_refused_only_beyond_the_slots(tmp_path: Path, sink: WebhookSink) -> None:
    """4 x N at once: at most N accepted. coglet also refuses some that arrive at the same
    instant with slots free (tests/support/cog_runs.py, `predict_retrying`), so the refused
    are then sent again one by one: exactly N are in flight, and every one beyond is a 409."""
    slots = 4
    ids = [f"burst-{n}-{uuid.uuid4().hex}" for n in range(4 * slots)]
    payloads = [{"id": i, "input": {"texts": LONG_TEXTS}, "webhook": sink.url} for i in ids]
    async_header = {"Prefer": "respond-async"}
    with cog_server(tmp_path / "server.log", env={"COG_MAX_CONCURRENCY": str(slots)}) as server:
        with ThreadPoolExecutor(len(payloads)) as pool:  # each holds its slot for seconds
            burst = list(pool.map(lambda p: predict(server, p, headers=async_header), payloads))
        accepted = [i for i, r in zip(ids, burst, strict=True) if r.status_code == 202]
        refused = [p for p, r in zip(payloads, burst, strict=True) if r.status_code == 409]
        assert 1 <= len(accepted) <= slots
        assert len(accepted) + len(refused) == len(payloads)
        for payload in refused:  # one at a time: no arrival races, only the slot count
            if predict(server, payload, headers=async_header).status_code == 202:
                accepted.append(payload["id"])
        assert len(accepted) == slots
        for prediction_id in accepted:
            httpx.post(f"{server.url}/predictions/{prediction_id}/cancel", timeout=10)
