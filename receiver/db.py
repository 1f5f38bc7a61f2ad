"""Open the store and bring its schema up to date, on SQLite or PostgreSQL.

SQLite runs in WAL mode with synchronous=FULL, so a commit is on disk before we acknowledge,
and every writing transaction starts with BEGIN IMMEDIATE: writers queue on the lock up front
instead of failing when a read transaction tries to upgrade. Reads (`reading`) begin deferred.
Migrations run at start under a lock (PostgreSQL advisory lock, SQLite's write lock) so several
processes can start together.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 0x5245_4345  # "RECE": any constant shared by all receiver processes
DEFAULT_WAIT_SECONDS = 10.0  # RECEIVER_STORE_TIMEOUT_SECONDS' default
READ_ONLY = "receiver_read_only"  # an execution option: see `reading`


def normalize_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here; SQLite paths get their folder created."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if parsed.drivername == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return url


def _sqlite_pragmas(wait_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={wait_ms}")
        cursor.close()

    return on_connect


def reading(engine: Engine) -> Engine:
    """The same engine for reads only: on SQLite they begin deferred and go on while a writer
    holds the lock (WAL), instead of queueing for it."""
    return engine.execution_options(**{READ_ONLY: True})


def _sqlite_begin(conn: Connection) -> None:
    read_only = conn.get_execution_options().get(READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_engine(url: str, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> Engine:
    """An engine on which no statement waits longer than `wait_seconds` for a lock (SQLite's
    busy timeout; PostgreSQL's lock_timeout) or runs longer (PostgreSQL's statement_timeout):
    a held lock or a stalled disk becomes an error in bounded time, never a hang."""
    url = normalize_url(url)
    wait_ms = max(1, int(wait_seconds * 1000))
    if url.startswith("sqlite"):
        connect_args = {"check_same_thread": False, "timeout": wait_seconds}
        engine = create_engine(url, connect_args=connect_args)
        event.listen(engine, "connect", _sqlite_pragmas(wait_ms))
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    options = f"-c lock_timeout={wait_ms} -c statement_timeout={wait_ms}"
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=8,
        max_overflow=8,
        connect_args={
            "options": options,
            "connect_timeout": max(1, int(wait_seconds)),
            # A server that vanished (a partition, not a refusal) is noticed within a minute,
            # not after the kernel's two hours: statement_timeout cannot see a dead socket.
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        },
    )


def migrate(engine: Engine, revision: str = "head") -> None:
    """Apply every pending migration (up to `revision`: the tests upgrade a store that holds
    an older schema's rows); safe to call from many processes at once."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # A migration may take longer than a delivery may wait: no timeouts in this one.
            connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
            connection.exec_driver_sql("SET LOCAL lock_timeout = 0")
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
