"""Refused deliveries in the receiver's log: one line each with the reason, never a secret
or a body, and no more than a window's worth of lines however hard a sender tries."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import pytest

from receiver.refusals import LINES_PER_WINDOW as LINES
from receiver.refusals import RefusalLog
from tests.support.live import StartReceiver
from tests.support.receiving import SECRET, on_sqlite, prediction, signed


def log_of(tmp_path: Path) -> str:
    """The log of the one receiver process a test started (written before it answers)."""
    (log,) = tmp_path.glob("receiver-*.log")
    return log.read_text()


def refusal_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "refused webhook:" in line]


def post(url: str, raw: bytes, headers: dict[str, str]) -> int:
    response = httpx.post(f"{url}/webhooks/replicate", content=raw, headers=headers, timeout=30)
    return response.status_code


def test_refused_webhooks_are_logged_without_secrets(
    started: StartReceiver, tmp_path: Path
) -> None:
    receiver = started(on_sqlite(tmp_path, RECEIVER_MAX_BODY_BYTES="2048"))
    body = prediction("p-log", "succeeded", output=[[0.125] * 4])
    wrong_key = signed(body, "msg_wrong_key", key=b"w" * 32)
    stale = signed(body, "msg_stale", timestamp=time.time() - 3600)
    not_json = signed(b"not json", "msg_not_json")
    too_big = signed(prediction("p-big", "succeeded", output="x" * 4096), "msg_too_big")
    good = signed(body, "msg_good")
    sent = [
        post(receiver.url, *wrong_key),
        post(receiver.url, *stale),
        post(receiver.url, *not_json),
        post(receiver.url, *too_big),
        post(receiver.url, b"{}", {"content-type": "application/json"}),
        post(receiver.url, *good),
    ]
    assert sent == [401, 401, 400, 413, 401, 200]
    log = log_of(tmp_path)
    lines = refusal_lines(log)
    expected = [
        ("401 signature verification failed: signature_mismatch", "msg_wrong_key"),
        ("401 signature verification failed: timestamp_too_old", "msg_stale"),
        ("400 body is not JSON", "msg_not_json"),
        ("413 body over 2048 bytes", "msg_too_big"),
        ("401 signature verification failed: missing_headers", "-"),
    ]
    assert len(lines) == len(expected), log
    for line, (reason, webhook_id) in zip(lines, expected, strict=True):
        assert "WARNING" in line
        assert f"refused webhook: {reason} (webhook-id {webhook_id}, client 127.0.0.1)" in line
    assert "msg_good" not in log  # accepted deliveries are counted in /metrics, not logged
    for _, headers in (wrong_key, stale, not_json, too_big, good):
        assert headers["webhook-signature"].split(",", 1)[1] not in log
    assert SECRET.removeprefix("whsec_") not in log
    assert "0.125" not in log  # nor any body


def test_refusals_are_rate_limited_and_the_rest_counted(
    started: StartReceiver, tmp_path: Path
) -> None:
    receiver = started(on_sqlite(tmp_path))
    flood = [signed(prediction(f"f{i}", "starting"), key=b"f" * 32) for i in range(LINES + 7)]
    assert {post(receiver.url, *delivery) for delivery in flood} == {401}
    assert len(refusal_lines(log_of(tmp_path))) == LINES
    receiver.stop()  # the count of unlogged refusals is written at the latest on shutdown
    lines = refusal_lines(log_of(tmp_path))
    assert len(lines) == LINES + 1
    assert f"refused webhook: 7 more not logged (at most {LINES} lines per 10 s)" in lines[-1]


def test_the_next_window_starts_with_the_count_of_what_was_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    refusals = RefusalLog(
        logging.getLogger("receiver.test"), limit=2, window=10, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, "receiver.test"):
        for i in range(5):
            refusals.refused(now[0], 401, "signature mismatch", f"msg_{i}", "192.0.2.1")
        now[0] += 10
        refusals.refused(now[0], 400, "body is not JSON", None, None)
    assert [r.getMessage() for r in caplog.records] == [
        "refused webhook: 401 signature mismatch (webhook-id msg_0, client 192.0.2.1)",
        "refused webhook: 401 signature mismatch (webhook-id msg_1, client 192.0.2.1)",
        "refused webhook: 3 more not logged (at most 2 lines per 10 s)",
        "refused webhook: 400 body is not JSON (webhook-id -, client -)",
    ]
