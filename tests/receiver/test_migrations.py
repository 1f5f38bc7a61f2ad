"""The migrations build exactly the tables the code declares (receiver/tables.py), on both
databases: a column added to one and not the other would fail only on a user's store."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from receiver.db import make_engine, migrate
from receiver.tables import metadata


def test_migrated_schema_equals_the_declared_tables(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    ignored = {"alembic_version"}
    assert [d for d in differences if not (d[0] == "remove_table" and d[1].name in ignored)] == []
