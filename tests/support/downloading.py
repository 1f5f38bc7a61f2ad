"""What download tests share: a store with its own clock and settings, and ways to step it."""

from __future__ import annotations

from dataclasses import dataclass

from receiver.downloads import LEASE_SECONDS, Downloader
from receiver.settings import Settings
from receiver.store import Job, Store, Turn
from tests.support.loopback_http import FileServer
from tests.support.receiving import Clock


@dataclass(frozen=True)
class DownloadRig:
    """What a download test works with: the settings, the store and the clock it moves."""

    settings: Settings
    store: Store
    clock: Clock

    def downloader(self) -> Downloader:
        return Downloader(self.store, self.settings, self.clock)


def rig_settings(base: Settings, files: FileServer) -> Settings:
    """The shared test settings, plus the local file server's origin, 3 attempts at most and
    files of 64 KiB at most, each within 2 s."""
    return Settings.model_validate(
        {
            **base.model_dump(),
            "receiver_download_hosts": ["replicate.delivery", files.origin],
            "receiver_download_max_attempts": 3,
            "receiver_download_max_bytes": 64 * 1024,
            "receiver_download_timeout_seconds": 2.0,
        }
    )


def claim(rig: DownloadRig, want: int, now: float | None = None) -> list[Job]:
    """Claim jobs as a worker's turn does, without running them."""
    turn = Turn(
        now=rig.clock() if now is None else now, lease=LEASE_SECONDS, max_attempts=3, want=want
    )
    return rig.store.download_turn(turn)


def drain(downloader: Downloader) -> int:
    """Step a downloader until a turn finds nothing to do; the number of busy turns."""
    steps = 0
    while downloader.step():
        steps += 1
    return steps
