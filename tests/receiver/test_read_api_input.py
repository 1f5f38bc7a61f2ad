"""The read API on bad input answers 4xx with a reason, never a 5xx (and never the 503 "store
unavailable" that would page an operator); stored files are served so no browser renders them."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from receiver.downloads import Downloader
from receiver.settings import Settings
from tests.support.live import LiveReceiver
from tests.support.receiving import deliver, prediction, read


def cursor_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


@pytest.mark.parametrize(
    "raw",
    [
        b"[1" + b"0" * 400 + b', "x"]',  # a number no float holds
        b"[" * 5000 + b"]" * 5000,  # deeper than any parser's recursion
        b'[1.5, "x\\u0000y"]',  # PostgreSQL text cannot hold NUL
        b"[1.5, 7]",
        b'{"a": 1}',
        b'[NaN, "x"]',
    ],
)
def test_a_cursor_this_api_did_not_return_is_a_400(receiver: LiveReceiver, raw: bytes) -> None:
    response = read(receiver.url, f"/predictions?cursor={cursor_of(raw)}")
    assert response.status_code == 400
    assert response.json()["error"] == "cursor is not one this API returned"


def test_unknown_statuses_are_refused_with_the_known_ones(receiver: LiveReceiver) -> None:
    for status in ("bogus", "%00", "SUCCEEDED"):
        response = read(receiver.url, f"/predictions?status={status}")
        assert response.status_code == 400
        assert "status must be one of: starting, processing, succeeded" in response.json()["error"]


@pytest.mark.parametrize("path", ["/predictions/a%00b", "/predictions/a%00b/files/0"])
def test_an_id_no_prediction_can_have_is_a_404(receiver: LiveReceiver, path: str) -> None:
    response = read(receiver.url, path)
    assert response.status_code == 404


def stored_files(receiver: LiveReceiver, settings: Settings, output: list[str]) -> str:
    """Deliver a prediction with `output` and download its files; return its id."""
    deliver(receiver.url, prediction("served", "succeeded", output=output))
    downloader = Downloader(receiver.store, settings, receiver.clock)
    while downloader.step():
        pass
    return "served"


def test_stored_files_are_attachments_never_rendered_as_pages(
    receiver: LiveReceiver, receiver_settings: Settings
) -> None:
    output = [
        "data:text/html,<script>alert(1)</script>",
        "data:image/svg+xml,<svg onload='alert(1)'/>",
        "data:text/\u00e9t\u00e9,latin-1 cannot carry this media type",
        "data:application/x-npy;base64,k05VTVBZ",
    ]
    pid = stored_files(receiver, receiver_settings, output)
    served = [read(receiver.url, f"/predictions/{pid}/files/{n}") for n in range(len(output))]
    assert [r.status_code for r in served] == [200, 200, 200, 200]
    types = [r.headers["content-type"] for r in served]
    assert types == ["application/octet-stream"] * 3 + ["application/x-npy"]
    for response in served:
        assert response.headers["content-disposition"].startswith("attachment; filename=")
        assert response.headers["x-content-type-options"] == "nosniff"
    assert served[0].content == b"<script>alert(1)</script>"


def test_a_stored_file_gone_from_disk_is_410(
    receiver: LiveReceiver, receiver_settings: Settings
) -> None:
    pid = stored_files(receiver, receiver_settings, ["data:text/plain,hello"])
    local = Path(read(receiver.url, f"/predictions/{pid}").json()["files"][0]["local"])
    local.unlink()
    response = read(receiver.url, f"/predictions/{pid}/files/0")
    assert response.status_code == 410
    assert response.json()["error"] == "file was stored but is no longer on disk"


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_no_interactive_docs_or_schema_are_served(receiver: LiveReceiver, path: str) -> None:
    assert httpx.get(f"{receiver.url}{path}").status_code == 404
