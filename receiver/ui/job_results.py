"""A finished job's results as one Parquet download from the console: written by the same
code as `jobs results` (one chunk in memory at a time), from the chunks' stored files, into a
temporary file that is removed once sent."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from receiver.jobs.results import ResultsError, chunk_results, write
from receiver.jobs.store import JobStore


class StoredChunks:
    """The `ChunkSource` of `jobs results`, read from this receiver's own store and files."""

    def __init__(self, jobs: JobStore, job_id: str) -> None:
        self.jobs = jobs
        self.job_id = job_id

    def chunk(self, n: int) -> dict[str, Any]:
        found = self.jobs.chunk(self.job_id, n)
        if found is None:
            raise ResultsError(f"job {self.job_id} has no chunk {n}")
        return found

    def vectors(self, n: int) -> bytes:
        path = self.chunk(n)["path"]
        try:
            return Path(path).read_bytes()
        except (OSError, TypeError) as exc:  # deleted from disk, or never stored
            raise ResultsError(f"chunk {n}: its vectors file is gone ({path})") from exc


def parquet_results(jobs: JobStore, job: dict[str, Any]) -> Path:
    """The job's vectors in input order, failed ids left out (the page lists them). The
    caller removes the file's folder (`remove_results`) once it is sent."""
    folder = Path(tempfile.mkdtemp(prefix="receiver-results-"))
    output = folder / f"{job['id']}.parquet"
    try:
        source = StoredChunks(jobs, job["id"])
        write(output, folder / "errors.jsonl", chunk_results(source, job["chunks"]), 0)
    except BaseException:
        remove_results(output)
        raise
    return output


def remove_results(output: Path) -> None:
    shutil.rmtree(output.parent, ignore_errors=True)
