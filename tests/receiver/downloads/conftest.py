"""Fixtures of the download tests: a loopback file server and a store that fetches from it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from receiver.runtime import open_store
from receiver.settings import Settings
from tests.support.downloading import DownloadRig, rig_settings
from tests.support.loopback_http import FileServer
from tests.support.receiving import Clock


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


@pytest.fixture
def rig(receiver_settings: Settings, files: FileServer) -> Iterator[DownloadRig]:
    settings = rig_settings(receiver_settings, files)
    store = open_store(settings)
    yield DownloadRig(settings=settings, store=store, clock=Clock())
    store.engine.dispose()
