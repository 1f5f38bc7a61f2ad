"""A genuine delivery is stored (its unusable parts marked unusable) or refused with a 4xx that
says why; never a 503 on every retry, which would lose it once Replicate stops retrying."""

from __future__ import annotations

import json
from typing import Any

import pytest

from receiver.rules import MAX_DEPTH
from receiver.settings import Settings
from tests.support.live import LiveReceiver
from tests.support.receiving import deliver, prediction, read


def nested(depth: int) -> Any:
    """A value `depth` containers deep: [[[...[1.0]...]]]."""
    value: Any = 1.0
    for _ in range(depth):
        value = [value]
    return value


def test_nul_characters_in_output_files_are_stored_as_unusable(receiver: LiveReceiver) -> None:
    """PostgreSQL text cannot hold NUL: such a URL must not make every retry fail."""
    output = [
        "https://replicate.delivery/a\x00b/embeddings.npy",
        "data:text/plain,before\x00after",
        "https://replicate.delivery/fine/embeddings.npy",
    ]
    for _ in range(2):  # the retry of an accepted delivery is a duplicate, not a failure
        response = deliver(receiver.url, prediction("nul", "succeeded", output=output), msg_id="m")
        assert response.status_code == 200, response.text
    stored = read(receiver.url, "/predictions/nul").json()
    assert stored["status"] == "succeeded"
    assert stored["output"] == output  # the state keeps what was sent
    files = stored["files"]
    assert [f["state"] for f in files] == ["refused", "refused", "queued"]
    assert files[0]["last_error"] == "URL holds a NUL character"
    assert files[1]["last_error"] == "URL holds a NUL character"


def test_a_body_at_the_depth_limit_is_accepted_at_every_step(receiver: LiveReceiver) -> None:
    for status in ("starting", "processing", "succeeded"):
        body = prediction("deep", status, output=nested(MAX_DEPTH - 1))  # the body is one level
        response = deliver(receiver.url, body)
        assert response.status_code == 200, response.text
    stored = read(receiver.url, "/predictions/deep")
    assert stored.status_code == 200
    assert stored.json()["status"] == "succeeded"


@pytest.mark.parametrize("status", ["starting", "succeeded"])
def test_a_body_deeper_than_the_limit_is_a_400_and_breaks_nothing_later(
    receiver: LiveReceiver, status: str
) -> None:
    too_deep = prediction("deeper", status, output=nested(MAX_DEPTH))
    response = deliver(receiver.url, too_deep)
    assert response.status_code == 400
    assert response.json()["error"] == f"body nested deeper than {MAX_DEPTH} levels"
    for later in ("processing", "succeeded"):  # the prediction's next events are unaffected
        response = deliver(receiver.url, prediction("deeper", later, output=[[0.5]]))
        assert response.status_code == 200, response.text
    assert read(receiver.url, "/predictions/deeper").json()["output"] == [[0.5]]


@pytest.mark.parametrize("depth", [300, 900])
def test_depths_the_parser_accepts_but_the_pipeline_cannot_are_400(
    receiver: LiveReceiver, depth: int
) -> None:
    """orjson parses 1024 levels, encodes 255, and Python recursion stops near 1000."""
    raw = json.dumps(prediction("very-deep", "succeeded", output=nested(depth))).encode()
    response = deliver(receiver.url, raw)
    assert response.status_code == 400
    assert "nested deeper than" in response.json()["error"]


def test_an_output_past_the_file_cap_is_stored_with_the_rest_marked(
    receiver: LiveReceiver, receiver_settings: Settings
) -> None:
    """Storing every row of a huge output would outlast the store timeout on every retry."""
    cap = receiver_settings.receiver_max_files_per_prediction
    output = [f"https://replicate.delivery/f/{i}.npy" for i in range(cap + 3)]
    response = deliver(receiver.url, prediction("many", "succeeded", output=output))
    assert response.status_code == 200, response.text
    files = read(receiver.url, "/predictions/many").json()["files"]
    assert [f["state"] for f in files] == ["queued"] * cap + ["refused"]
    assert files[-1]["url"] == "(3 more files)"
    assert files[-1]["last_error"] == (
        f"output holds {cap + 3} files; RECEIVER_MAX_FILES_PER_PREDICTION collects the first {cap}"
    )
