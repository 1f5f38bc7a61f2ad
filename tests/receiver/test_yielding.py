"""Downloads yield to webhooks: the receiver counts webhooks, tells its download process ten
times a second, and the download worker runs few files at a time while they come fast."""

from __future__ import annotations

from pathlib import Path

import httpx

from localcog.loopback import serve_in_thread
from localcog.polling import poll
from receiver.app import create_app
from receiver.runtime import open_store
from receiver.settings import Settings, signing_keys
from receiver.workers import ChildWorker
from receiver.yielding import STALE_SECONDS, Arrivals, Pace
from tests.support.receiving import KEY, Clock, deliver, prediction, signed


def test_each_pulse_counts_the_webhooks_since_the_last() -> None:
    arrivals = Arrivals()
    for _ in range(3):
        arrivals.arrived()
    assert arrivals.pulse() == b"3\n"
    assert arrivals.pulse() == b"0\n"
    arrivals.arrived()
    assert arrivals.pulse() == b"1\n"


def test_the_download_side_yields_only_to_a_recent_rate_over_its_threshold() -> None:
    clock = Clock()
    pace = Pace(above=100, clock=clock)
    assert not pace.yielding()  # nothing heard yet
    pace.heard(b"11\n")  # 11 in a tenth of a second: 110/s
    assert pace.yielding()
    pace.heard(b"10\n")  # 100/s: not over
    assert not pace.yielding()
    pace.heard(b"50\n")
    clock.now += STALE_SECONDS + 0.1  # the receiver stopped telling: nothing to go by
    assert not pace.yielding()
    pace.heard(b"not a count\n")  # ignored, not a crash
    assert not pace.yielding()
    never = Pace(above=0, clock=clock)
    never.heard(b"100000\n")
    assert not never.yielding()


def test_every_webhook_that_reaches_the_receiver_is_counted(receiver_settings: Settings) -> None:
    arrivals = Arrivals()
    keys = signing_keys(receiver_settings.secrets())
    store = open_store(receiver_settings)
    app = create_app(receiver_settings, keys, store, arrivals=arrivals)
    with serve_in_thread(app) as url:
        assert deliver(url, prediction("y1", "starting")).status_code == 200
        assert deliver(url, prediction("y1", "succeeded")).status_code == 200
        raw, headers = signed(prediction("y2", "starting"), key=KEY[::-1])
        forged = httpx.post(f"{url}/webhooks/replicate", content=raw, headers=headers)
        assert forged.status_code == 401  # refused, but it took the receiver's time too
    store.engine.dispose()
    assert arrivals.pulse() == b"3\n"


def test_the_download_process_is_told_what_arrived(tmp_path: Path) -> None:
    record = tmp_path / "pulses"
    arrivals = Arrivals()
    worker = ChildWorker(
        "pulses", "tests.support.pulse_child", f"{record}\n".encode(), arrivals.pulse
    )
    worker.start()
    try:
        for _ in range(5):
            arrivals.arrived()

        def told() -> int | None:
            told = sum(int(n) for n in record.read_text().split()) if record.exists() else 0
            return told if told >= expected else None

        expected = 5
        assert poll(told, timeout=10, interval=0.05, what="five arrivals told") == 5
        arrivals.arrived()
        expected = 6  # each arrival is told once: the next pulses carry only the new one
        assert poll(told, timeout=10, interval=0.05, what="a sixth arrival told") == 6
    finally:
        worker.stop()
