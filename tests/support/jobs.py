"""What the jobs fixtures yield: a receiver app running jobs against the stand-in, the runner
the test steps by hand (no thread, no waiting), and the clock both read."""

from __future__ import annotations

from dataclasses import dataclass

from receiver.jobs.runner import JobRunner
from receiver.settings import Settings
from receiver.store import Store
from standin.memory import StandIn
from tests.support.receiving import Clock


@dataclass(frozen=True)
class JobRig:
    url: str  # the receiver app, without background workers
    store: Store
    clock: Clock
    runner: JobRunner  # its `step()` is the runner's whole loop, one pass
    standin: StandIn  # Replicate: its predictions stay `starting` until the test ends them
    deployment: str
    settings: Settings  # the receiver's: a test builds a download worker from them
