"""The predictor under Cog's real HTTP server (coglet), as the built image runs it."""

from __future__ import annotations

import collections
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from localcog.server import COGLET_PREDICTIONS, CogServer, cog_server
from predict import MAX_TEXTS, MAX_TOTAL_BYTES, Runner
from tests.support.cog_runs import decode_npy, predict, wait_until_run_began
from tests.support.embeddings import VARIED_TEXTS, cosines
from tests.support.loopback_http import WebhookSink

pytestmark = pytest.mark.usefixtures("schema_file")


def test_ready_with_a_clean_log(cog: CogServer) -> None:
    assert cog.health()["status"] == "READY"
    log = cog.log().lower()
    assert "deprecat" not in log
    assert "no schema file" not in log  # inputs are validated, as in the built image


def test_sync_json_prediction(cog: CogServer, reference: Any) -> None:
    response = predict(cog, {"input": {"texts": VARIED_TEXTS}})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "succeeded", body.get("error")
    vectors = np.asarray(body["output"], dtype=np.float32)
    assert vectors.shape == (len(VARIED_TEXTS), 384)
    expected = reference.encode(VARIED_TEXTS, convert_to_numpy=True)
    assert cosines(vectors, expected).min() >= 0.999


def test_npy_output_is_a_file_equal_to_the_json(cog: CogServer) -> None:
    texts = ["first text", "second, longer text", ""]
    as_json = predict(cog, {"input": {"texts": texts, "normalize": False}}).json()
    as_npy = predict(
        cog, {"input": {"texts": texts, "normalize": False, "output_format": "npy"}}
    ).json()
    assert as_npy["status"] == "succeeded", as_npy.get("error")
    array = decode_npy(as_npy["output"])
    assert array.dtype == np.float32
    assert array.shape == (3, 384)
    np.testing.assert_array_equal(array, np.asarray(as_json["output"], dtype=np.float32))


def test_async_prediction_sends_start_output_completed(cog: CogServer, sink: WebhookSink) -> None:
    prediction_id = f"test-{uuid.uuid4().hex}"
    response = predict(
        cog,
        {
            "id": prediction_id,
            "input": {"texts": ["async one", "async two"]},
            "webhook": sink.url,
            "webhook_events_filter": ["start", "output", "completed"],
        },
        headers={"Prefer": "respond-async"},
    )
    assert response.status_code == 202
    done = sink.wait_for(lambda e: e["id"] == prediction_id and e["status"] == "succeeded")
    # Cog sends the output and completed events concurrently: either may arrive first.
    sink.wait_for(
        lambda e: e["id"] == prediction_id and e["status"] == "processing" and e.get("output")
    )
    events = [e for e in sink.events if e["id"] == prediction_id]
    assert events[0]["status"] == "processing"  # the start event, before any output
    assert "output" not in events[0]
    assert len(events) == 3
    assert np.asarray(done["output"]).shape == (2, 384)


def test_cancel_a_running_prediction(cog: CogServer, sink: WebhookSink) -> None:
    prediction_id = f"cancel-{uuid.uuid4().hex}"
    long_texts = [
        f"{i} " + "word " * 300 for i in range(MAX_TEXTS)
    ]  # seconds of work, under the size limit
    response = predict(
        cog,
        {
            "id": prediction_id,
            "input": {"texts": long_texts},
            "webhook": sink.url,
            "webhook_events_filter": ["start", "completed"],
        },
        headers={"Prefer": "respond-async"},
    )
    assert response.status_code == 202
    wait_until_run_began(cog, prediction_id)
    assert (
        httpx.post(f"{cog.url}/predictions/{prediction_id}/cancel", timeout=10).status_code == 200
    )
    final = sink.wait_for(
        lambda e: e["id"] == prediction_id and e["status"] in {"canceled", "succeeded", "failed"}
    )
    assert final["status"] == "canceled"
    assert cog.health()["status"] == "READY"
    assert predict(cog, {"input": {"texts": ["after cancel"]}}).json()["status"] == "succeeded"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "texts"),
        ({"texts": [1, 2]}, "texts"),
        ({"texts": ["ok", None]}, "texts"),
        ({"texts": "not a list"}, "texts"),
        ({"texts": ["ok"], "output_format": "csv"}, "output_format"),
        ({"texts": ["ok"], "normalize": "yes"}, "normalize"),
        ({"texts": ["ok"], "normalize": 1}, "normalize"),
    ],
)
def test_invalid_input_is_a_422_with_a_reason(
    cog: CogServer, payload: dict[str, Any], field: str
) -> None:
    response = predict(cog, {"input": payload})
    assert response.status_code == 422
    details = response.json()["detail"]
    assert any(field in "/".join(map(str, d["loc"])) and d["msg"] for d in details)
    assert cog.health()["status"] == "READY"


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([], f"1 to {MAX_TEXTS} strings; got 0"),
        (["a"] * (MAX_TEXTS + 1), f"1 to {MAX_TEXTS} strings; got {MAX_TEXTS + 1}"),
        (["é" * (MAX_TOTAL_BYTES // 2)] * 2, f"the limit is {MAX_TOTAL_BYTES}"),
    ],
)
def test_limits_fail_the_prediction_with_a_message(
    cog: CogServer, texts: list[str], message: str
) -> None:
    body = predict(cog, {"input": {"texts": texts}}).json()
    assert body["status"] == "failed"
    assert message in body["error"]
    assert cog.health()["status"] == "READY"


def test_a_failed_prediction_says_why_in_one_sentence(cog: CogServer) -> None:
    error = predict(cog, {"input": {"texts": []}}).json()["error"]
    # coglet (0.23.1, pinned) writes everything before "Invalid input", the exception's
    # qualified name; no runner can change that part. The whole string is asserted so that
    # a change on either side shows.
    assert error == (
        "Prediction failed: Async prediction failed: "
        "Invalid input: texts must hold 1 to 1024 strings; got 0"
    )


def test_a_strictly_serial_client_is_never_refused(cog: CogServer) -> None:
    ids = [f"serial-{uuid.uuid4().hex}" for _ in range(300)]
    statuses: collections.Counter[int] = collections.Counter()
    with httpx.Client(base_url=cog.url, timeout=60) as client:
        for i, prediction_id in enumerate(ids):  # each sent the moment the previous answer is in
            body = {"id": prediction_id, "input": {"texts": [f"text {i}"]}}
            statuses[client.post("/predictions", json=body).status_code] += 1
    assert statuses == {200: 300}


def test_a_second_client_is_served_while_a_long_prediction_runs(
    cog: CogServer, sink: WebhookSink
) -> None:
    long_id = f"long-{uuid.uuid4().hex}"
    texts = [f"{i} " + "word " * 300 for i in range(MAX_TEXTS)]  # a minute of work
    payload = {
        "id": long_id,
        "input": {"texts": texts},
        "webhook": sink.url,
        "webhook_events_filter": ["start", "completed"],
    }
    assert predict(cog, payload, headers={"Prefer": "respond-async"}).status_code == 202
    sink.wait_for(lambda e: e["id"] == long_id and e["status"] == "processing")
    short = predict(cog, {"input": {"texts": ["meanwhile"], "output_format": "npy"}})
    assert short.status_code == 200
    assert decode_npy(short.json()["output"]).shape == (1, 384)
    httpx.post(f"{cog.url}/predictions/{long_id}/cancel", timeout=10)
    long = sink.wait_for(lambda e: e["id"] == long_id and e["status"] != "processing")
    assert long["status"] == "canceled"  # not finished: the short one did not wait for it


def test_npy_outputs_are_kept_apart_and_pruned(tmp_path: Path) -> None:
    runner = Runner()
    runner.outputs = tmp_path
    runner.output_ids = iter(range(100))
    runner.keep_outputs = 8  # 2 x slots(): four slots
    paths = [runner.save_npy(np.full((1, 384), i, dtype=np.float32)) for i in range(12)]
    assert len(set(paths)) == 12
    assert all(path.name == "embeddings.npy" for path in paths)
    kept = paths[-8:]
    assert sorted(tmp_path.glob("*/embeddings.npy")) == sorted(kept)
    assert [float(np.load(path)[0, 0]) for path in kept] == list(range(4, 12))


def test_unknown_input_keys_are_dropped(cog: CogServer) -> None:
    body = predict(cog, {"input": {"texts": ["x"], "unexpected": True}}).json()
    assert body["status"] == "succeeded"


def test_a_stopped_server_leaves_nothing_in_tmp(tmp_path: Path) -> None:
    someone_elses = COGLET_PREDICTIONS / f"other-{uuid.uuid4().hex}"
    someone_elses.mkdir(parents=True)  # another server's prediction: not ours to remove
    ours = [f"tmp-{uuid.uuid4().hex}" for _ in range(2)]
    with cog_server(tmp_path / "server.log") as server:
        environ = Path(f"/proc/{server.process.pid}/environ").read_bytes().split(b"\0")
        scratch = Path(next(v for v in environ if v.startswith(b"TMPDIR="))[7:].decode())
        for prediction_id, output_format in zip(ours, ("json", "npy"), strict=True):
            body = {"id": prediction_id, "input": {"texts": ["a"], "output_format": output_format}}
            assert predict(server, body).json()["status"] == "succeeded"
        assert all((COGLET_PREDICTIONS / p).is_dir() for p in ours)  # coglet made its folders...
        assert scratch.is_dir()
    assert not any((COGLET_PREDICTIONS / p).exists() for p in ours)  # ...gone with the server
    assert not scratch.exists()
    assert someone_elses.is_dir()
    someone_elses.rmdir()
