"""The download worker in a process of its own, at a lower CPU priority than the webhooks.

`python -m receiver.download_process` is started by `receiver.workers.ChildWorker`, one per
receiver process. Its first line on stdin is its configuration (the download settings and the
store, as JSON); each later line is how many webhooks reached the receiver lately
(`receiver.yielding`). It runs `Downloader` turns until stdin closes (its receiver stopped, or
died: the pipe closes either way) or it gets SIGTERM, and records how its last downloads ended.

Why a process: fetching hundreds of files a second is Python work, and in a thread of the
receiver it would take the GIL from the event loop that answers Replicate. Why `nice`: on a
busy machine the webhooks come first, and the queue catches up when they let it (it has an hour).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Any

from receiver.downloads import Downloader
from receiver.settings import Settings
from receiver.store import Store, StoreConfig
from receiver.yielding import Pace

log = logging.getLogger("receiver")
NICENESS = 10  # on Linux's scheduler, about a tenth of a core's share against a busy receiver
SETTINGS = {
    "receiver_database_url",
    "receiver_store_timeout_seconds",
    "receiver_output_dir",
    "receiver_download_hosts",
    "receiver_download_max_attempts",
    "receiver_download_max_bytes",
    "receiver_download_timeout_seconds",
    "receiver_download_concurrency",
    "receiver_download_yield_above",
    "receiver_max_files_per_prediction",
    "receiver_worker_poll_seconds",
}


def configuration(settings: Settings) -> bytes:
    """The first line a download process reads: what it needs of the receiver's settings."""
    return settings.model_dump_json(include=SETTINGS).encode() + b"\n"


def run(settings: Settings, stop: threading.Event, pace: Pace) -> None:
    config = StoreConfig(
        settings.receiver_database_url,
        settings.receiver_download_hosts,
        settings.receiver_store_timeout_seconds,
        settings.receiver_max_files_per_prediction,
    )
    downloader = Downloader(Store.open(config), settings, yielding=pace.yielding)
    try:
        while not stop.is_set():
            try:
                busy = downloader.step()
            except Exception:  # a failing turn must not end the worker; the jobs stay queued
                log.exception("download turn failed")
                busy = False
            if not busy:
                stop.wait(settings.receiver_worker_poll_seconds)
    finally:
        downloader.close()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s download: %(message)s")
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    settings = Settings.model_validate_json(sys.stdin.buffer.readline())
    stop = threading.Event()
    pace = Pace(settings.receiver_download_yield_above)

    def listen() -> None:
        for line in sys.stdin.buffer:  # how many webhooks reached the receiver lately
            pace.heard(line)
        stop.set()  # the receiver closed the pipe, or died

    def stop_on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C reaches the receiver, which stops us
    threading.Thread(target=listen, daemon=True).start()
    run(settings, stop, pace)
    logging.shutdown()
    # Downloads still running were given back to the queue: do not wait for their threads.
    os._exit(0)


if __name__ == "__main__":
    main()
