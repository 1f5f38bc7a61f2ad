"""What the jobs fixtures yield: a receiver app running jobs against the stand-in, the runner
the test steps by hand (no thread, no waiting), and the clock both read; and what tests do
with it: submit a job, read it, end its predictions as Replicate would."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from receiver.jobs.runner import JobRunner
from receiver.settings import Settings
from receiver.store import Store
from standin.memory import StandIn
from tests.support.receiving import READ_TOKEN, Clock, deliver, read

AUTH = {"authorization": f"Bearer {READ_TOKEN}"}


@dataclass(frozen=True)
class JobRig:
    url: str  # the receiver app, without background workers
    store: Store
    clock: Clock
    runner: JobRunner  # its `step()` is the runner's whole loop, one pass
    standin: StandIn  # Replicate: its predictions stay `starting` until the test ends them
    deployment: str
    settings: Settings  # the receiver's: a test builds a download worker from them


def submit(rig: JobRig, texts: int, chunk_size: int) -> str:
    body = b"".join(
        json.dumps({"id": f"t{i}", "text": f"text {i}"}).encode() + b"\n" for i in range(texts)
    )
    params = {"deployment": rig.deployment, "chunk_size": chunk_size}
    response = httpx.post(f"{rig.url}/jobs", params=params, content=body, headers=AUTH)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def job(rig: JobRig, job_id: str) -> dict[str, Any]:
    found: dict[str, Any] = read(rig.url, f"/jobs/{job_id}").json()
    return found


def created(rig: JobRig) -> list[dict[str, Any]]:
    return list(rig.standin.predictions.values())


def end(rig: JobRig, prediction: dict[str, Any], status: str, error: str | None) -> None:
    """Replicate's terminal webhook for the prediction, signed, into the receiver."""
    body = {**prediction, "status": status, "error": error}
    assert deliver(rig.url, body, timestamp=rig.clock.now).status_code == 200


def uploaded_npy(rig: JobRig, rows: int) -> str:
    """An output file on Replicate, as Cog uploads it: its URL."""
    buffer = io.BytesIO()
    np.save(buffer, np.ones((rows, 384), dtype=np.float32))
    answer = httpx.put(f"{rig.standin.base_url}/_uploads/out.npy", content=buffer.getvalue())
    return str(answer.headers["location"])
