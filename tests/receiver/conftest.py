"""The receiver's own fixtures: receiver processes started as a user starts them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from standin.local import ReceiverProcess, receiver_process
from tests.support.commands import CLEAN_ENV
from tests.support.live import StartReceiver


@pytest.fixture
def started(tmp_path: Path) -> Iterator[StartReceiver]:
    """Start receiver processes (`python -m receiver serve`) with the given environment; stop
    them all afterwards. Each logs to its own receiver-*.log in tmp_path."""
    with ExitStack() as stack:

        def start(env: dict[str, str]) -> ReceiverProcess:
            log = tmp_path / f"receiver-{uuid.uuid4().hex[:8]}.log"
            return stack.enter_context(receiver_process({**CLEAN_ENV, **env}, log))

        yield start
