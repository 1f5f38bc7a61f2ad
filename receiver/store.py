"""Everything the receiver keeps, behind one small API, on SQLite or PostgreSQL.

The work is split by job: `receiver.ingest` (exactly-once recording), `receiver.file_queue`
(the download queue), `receiver.reconcile_queries` (what the reconciler picks) and
`receiver.reads` (the read API), and `receiver.jobs.store` (corpus jobs). `Store` holds one of
each over one engine, so the HTTP layer, the workers and the writer process are each handed a
single object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, update

from receiver.db import DEFAULT_WAIT_SECONDS, make_engine, reading
from receiver.file_queue import FileQueue, Job, Settlement, StoredFile, Turn
from receiver.ingest import MAX_BATCH, Delivery, Ingest, Outcome
from receiver.jobs.store import JobStore
from receiver.reads import Reads, iso
from receiver.reconcile_queries import ReconcileQueries
from receiver.tables import heartbeat

# Files collected per prediction: 200 000 rows take about 5 s to store on PostgreSQL here,
# half the default store timeout (RECEIVER_MAX_FILES_PER_PREDICTION).
DEFAULT_MAX_FILES = 200_000

__all__ = [
    "MAX_BATCH",
    "Delivery",
    "Job",
    "Outcome",
    "Settlement",
    "Store",
    "StoreConfig",
    "StoredFile",
    "Turn",
    "iso",
]


@dataclass(frozen=True)
class StoreConfig:
    """What another process needs to open the same store: the URL as configured, not one
    rebuilt from an engine, the download allow-list and file cap that decide which jobs are
    queued, and how long a statement may wait for a lock."""

    database_url: str
    download_hosts: list[str]
    wait_seconds: float = DEFAULT_WAIT_SECONDS
    max_files: int = DEFAULT_MAX_FILES

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "database_url": self.database_url,
                "download_hosts": self.download_hosts,
                "wait_seconds": self.wait_seconds,
                "max_files": self.max_files,
            }
        )

    @classmethod
    def from_json(cls, payload: bytes) -> StoreConfig:
        values: dict[str, Any] = orjson.loads(payload)
        return cls(
            str(values["database_url"]),
            list(values["download_hosts"]),
            float(values["wait_seconds"]),
            int(values["max_files"]),
        )


class Store:
    """One engine, five jobs. `database_url`: the URL the engine was made from, passed as is
    to the writer process; a store built around an engine alone (as tests do) uses the engine's.
    """

    def __init__(
        self,
        engine: Engine,
        download_hosts: list[str],
        database_url: str | None = None,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        max_files: int = DEFAULT_MAX_FILES,
    ) -> None:
        self.engine = engine
        url = database_url or engine.url.render_as_string(hide_password=False)
        self.config = StoreConfig(url, download_hosts, wait_seconds, max_files)
        self.queue = FileQueue(engine, download_hosts, max_files)
        self.ingest = Ingest(engine, self.queue)
        self.reconciliation = ReconcileQueries(engine)
        self.reads = Reads(reading(engine))
        self.jobs = JobStore(engine)

    @classmethod
    def open(cls, config: StoreConfig) -> Store:
        """The store `config` names, as another process opens it (no migration)."""
        engine = make_engine(config.database_url, config.wait_seconds)
        return cls(
            engine,
            config.download_hosts,
            config.database_url,
            config.wait_seconds,
            config.max_files,
        )

    # Ingest
    def record(
        self, webhook_id: str, body: dict[str, Any], received_at: float, source: str = "webhook"
    ) -> Outcome:
        return self.ingest.record(webhook_id, body, received_at, source)

    def record_batch(self, batch: list[Delivery], conn: Connection | None = None) -> list[Outcome]:
        return self.ingest.record_batch(batch, conn)

    # The download queue
    def download_turn(self, turn: Turn) -> list[Job]:
        return self.queue.cycle(turn)

    def queue_depth(self) -> int:
        return self.queue.depth()

    # Reconciliation
    def stale(self, updated_before: float, created_after: float, limit: int) -> list[str]:
        return self.reconciliation.stale(updated_before, created_after, limit)

    def mark_reconciled(self, prediction_id: str, now: float) -> None:
        self.reconciliation.mark_reconciled(prediction_id, now)

    # Reads
    def prediction(self, prediction_id: str) -> dict[str, Any] | None:
        return self.reads.prediction(prediction_id)

    def predictions(
        self, status: str | None, limit: int, before: tuple[float, str] | None
    ) -> list[dict[str, Any]]:
        return self.reads.predictions(status, limit, before)

    def file(self, prediction_id: str, n: int) -> dict[str, Any] | None:
        return self.reads.file(prediction_id, n)

    def ping(self) -> None:
        self.reads.ping()

    def heartbeat(self, conn: Connection, now: float) -> None:
        """Commit one small write: what the writer process does when /healthz asks whether
        a commit still reaches the disk."""
        with conn.begin():
            conn.execute(update(heartbeat).where(heartbeat.c.id == 1).values(beat_at=now))
