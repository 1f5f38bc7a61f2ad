"""The predictor under Cog's real HTTP server (coglet), as the built image runs it."""

from __future__ import annotations

import base64
import io
import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from predict import MAX_TEXTS, MAX_TOTAL_BYTES
from ship.cog_server import CogServer, cog_server
from tests.conftest import VARIED_TEXTS, WEIGHTS, WebhookSink
from tests.test_engine import cosines

pytestmark = pytest.mark.usefixtures("schema_file")


def predict(cog: CogServer, payload: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(f"{cog.url}/predictions", json=payload, timeout=300, **kw)


def decode_npy(data_uri: str) -> np.ndarray:
    assert data_uri.startswith("data:")
    array: np.ndarray = np.load(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1])))
    return array


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
    sink.wait_for(lambda e: e["id"] == prediction_id and e["status"] == "processing")
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


def test_unknown_input_keys_are_dropped(cog: CogServer) -> None:
    body = predict(cog, {"input": {"texts": ["x"], "unexpected": True}}).json()
    assert body["status"] == "succeeded"


def broken_weights(tmp_path: Path, breakage: str) -> Path:
    folder = tmp_path / "weights"
    shutil.copytree(WEIGHTS, folder)
    if breakage == "missing":
        (folder / "model.safetensors").unlink()
    else:
        data = bytearray((folder / "tokenizer.json").read_bytes())
        data[500] ^= 0x01
        (folder / "tokenizer.json").write_bytes(bytes(data))
    return folder


@pytest.mark.parametrize(
    ("breakage", "message"),
    [("missing", "model.safetensors is missing"), ("corrupt", "tokenizer.json fails its sha256")],
)
def test_setup_refuses_bad_weights_with_one_clear_line(
    tmp_path: Path, breakage: str, message: str
) -> None:
    env = {"WEIGHTS_DIR": str(broken_weights(tmp_path, breakage))}
    with cog_server(tmp_path / "server.log", env=env, require_ready=False) as server:
        health = server.health()
    assert health["status"] == "SETUP_FAILED"
    logs = health["setup"]["logs"]
    assert message in logs
    assert "run `make weights` to fill it" in logs


def test_setup_refuses_an_unknown_model_dtype(tmp_path: Path) -> None:
    env = {"MODEL_DTYPE": "fp8"}
    with cog_server(tmp_path / "server.log", env=env, require_ready=False) as server:
        health = server.health()
    assert health["status"] == "SETUP_FAILED"
    assert (
        "MODEL_DTYPE='fp8' is not one of: auto, float32, bfloat16, float16"
        in health["setup"]["logs"]
    )
