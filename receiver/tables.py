"""The receiver's tables. Changes to them go through a new migration in migrations/versions/."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import postgresql, sqlite

metadata = MetaData()

# One row per prediction: its latest accepted state. Times are epoch seconds (portable, comparable).
predictions = Table(
    "predictions",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("status", String(32), nullable=False),
    Column("terminal", Boolean, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("reconciled_at", Double),
    # Replicate's metrics.predict_time, copied out of the body: the console lists it per row
    # without reading bodies, which can hold megabytes of vectors.
    Column("predict_time", Double),
    Index("predictions_open", "terminal", "updated_at"),
    Index("predictions_recent", "created_at", "id"),
)

# One row per accepted webhook-id, kept for good: the primary key is the exactly-once guarantee.
# Its replays add no row; they are counted on it, for the console's timeline.
deliveries = Table(
    "deliveries",
    metadata,
    Column("webhook_id", String(255), primary_key=True),
    Column("prediction_id", String(255), nullable=False, index=True),
    Column("status", String(32), nullable=False),
    Column("source", String(16), nullable=False),
    Column("received_at", Double, nullable=False),
    # Merged into the prediction; false: it came after the prediction had ended, and the
    # first terminal state was kept. NULL on rows stored before migration 0005.
    Column("applied", Boolean),
    Column("replays", Integer, nullable=False, server_default="0"),
    Column("last_replay_at", Double),
)

# One row per output file of a terminal prediction: also the download job queue.
files = Table(
    "files",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("prediction_id", String(255), nullable=False),
    Column("n", Integer, nullable=False),
    Column("url", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Double, nullable=False),
    Column("lease_until", Double),
    Column("last_error", Text),
    Column("path", Text),
    Column("sha256", String(64)),
    Column("size", BigInteger),
    Column("content_type", String(255)),
    UniqueConstraint("prediction_id", "n", name="files_prediction_n"),
    Index("files_ready", "state", "next_attempt_at"),
)


# One row, rewritten by /healthz through the writer process: a commit that reaches the disk.
heartbeat = Table(
    "heartbeat",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("beat_at", Double, nullable=False),
)


# One row per corpus job (receiver/jobs): what it runs on and how far it is.
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("deployment", String(255), nullable=False),
    Column("normalize", Boolean, nullable=False),
    Column("state", String(16), nullable=False),  # uploading, running, completed, canceled
    Column("texts", Integer, nullable=False),
    Column("chunks", Integer, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("finished_at", Double),
    Column("updated_at", Double),  # while uploading: when its last chunks were stored
    Index("jobs_recent", "created_at", "id"),
)

# One row per chunk of a job: its texts (one prediction's input) and where they are.
job_chunks = Table(
    "job_chunks",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("n", Integer, primary_key=True),
    Column("first", Integer, nullable=False),  # the position of its first text in the job
    Column("count", Integer, nullable=False),
    Column("input", Text, nullable=False),  # {"ids": [...], "texts": [...]}
    Column("digest", String(64), nullable=False),  # of the prediction input it is sent as
    # queued, creating, running, done, failed, canceled
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    # claims that ended with no prediction (its runner died, or its create made nothing)
    Column("lost_claims", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Double, nullable=False),
    Column("lease_until", Double),
    Column("claimed_at", Double),
    Column("prediction_id", String(255)),
    Column("error", Text),
    Column("finished_at", Double),
    Index("job_chunks_ready", "state", "next_attempt_at"),
    Index("job_chunks_prediction", "prediction_id"),
)

# Every prediction a chunk has followed, on any attempt: one is never taken by a second chunk,
# nor again by its own chunk once an attempt gave it up.
chunk_predictions = Table(
    "chunk_predictions",
    metadata,
    Column("prediction_id", String(255), primary_key=True),
    Column("job_id", String(64), nullable=False),
    Column("n", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Index("chunk_predictions_chunk", "job_id", "n"),
)

# Shared limits on calls to Replicate, one row each: a token bucket every process draws from.
rate_limits = Table(
    "rate_limits",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("tokens", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("blocked_until", Double, nullable=False),  # a 429's reset hint
)


def dialect_insert(engine: Engine) -> Callable[[Table], Any]:
    """The engine's own INSERT: both dialects spell ON CONFLICT the same way, the core one not."""
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
